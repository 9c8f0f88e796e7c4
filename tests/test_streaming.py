"""preparation/streaming.py: a stream packed as it is tokenized, exactly as the cached pipeline would."""


import numpy as np
from support.corpus import DOCUMENTS, EOT, prepare_corpus, rows_of, split_on
from support.tiny import TINY_BLOCK

from preparation import streaming


def test_streaming_mode_packs_the_stream_exactly(corpus, tmp_path, ranks_file, reference, monkeypatch):
    one = prepare_corpus(corpus, tmp_path / "one", ranks_file, streaming=True, val_tokens=40, num_proc=1)
    monkeypatch.setattr(streaming, "STREAM_BATCH_CHARS", 60)  # pieces of a few documents: the same rows
    two = prepare_corpus(corpus, tmp_path / "two", ranks_file, streaming=True, val_tokens=40, num_proc=2)
    assert one["splits"] == two["splits"]
    encoded = {text: [EOT] + reference.encode_ordinary(text) for text in DOCUMENTS}
    assert sum(s["tokens"] for s in one["splits"].values()) == sum(map(len, encoded.values()))
    assert one["splits"]["validation"]["tokens"] >= 40
    seen = []
    for split in ("train", "validation"):
        rows = rows_of(tmp_path / "one", split)
        assert np.array_equal(rows, rows_of(tmp_path / "two", split))
        assert (rows[1:, 0] == rows[:-1, -1]).all()
        stream = np.concatenate([rows[0]] + [row[1:] for row in rows[1:]]).tolist()
        complete = [[EOT] + s for s in split_on(stream, EOT)][:-1]
        assert all(ids in encoded.values() for ids in complete)
        seen.append({tuple(ids) for ids in complete})
        stats = one["splits"][split]
        # only the stream's tail is dropped
        assert stats["dropped_tokens"] == stats["tokens"] - len(rows) * TINY_BLOCK <= TINY_BLOCK
    assert not seen[0] & seen[1]


def test_the_stream_is_cut_into_pieces_of_whole_documents_within_the_character_limit(monkeypatch):
    monkeypatch.setattr(streaming, "STREAM_BATCH_CHARS", 5)
    batches = [{"text": ["aaaa", "bb"]}, {"text": []}, {"text": ["c", "dddddd", ""]}, {"text": ["ee"]}]
    # bb+c is 3 characters, and dddddd (6) would take it past 5: alone, as a document longer than the limit is
    assert list(streaming.text_pieces(iter(batches), "text")) == [["aaaa"], ["bb", "c"], ["dddddd"], ["", "ee"]]

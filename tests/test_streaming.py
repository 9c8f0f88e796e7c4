"""preparation/streaming.py: a stream packed as it is tokenized, exactly as the cached pipeline would."""


import numpy as np
from support.corpus import DOCUMENTS, EOT, prepare_corpus, rows_of, split_on
from support.tiny import TINY_BLOCK


def test_streaming_mode_packs_the_stream_exactly(corpus, tmp_path, ranks_file, reference):
    one = prepare_corpus(corpus, tmp_path / "one", ranks_file, streaming=True, val_tokens=40, num_proc=1)
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

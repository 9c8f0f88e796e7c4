"""prepare_data.py against tiktoken (the reference encoder) and hand-checked packing invariants."""

import json

import datasets
import numpy as np
from support.corpus import DOCUMENTS, EOT, expect_error, prepare_corpus, rows_of, split_on
from support.tiny import TINY_BLOCK


def test_exact_token_stream_packing_and_metadata(corpus, tmp_path, ranks_file, reference):
    out = tmp_path / "out"
    metadata = prepare_corpus(corpus, out, ranks_file)
    encoded = {text: [EOT] + reference.encode_ordinary(text) for text in DOCUMENTS}
    seen_documents = []
    for split in ("train", "validation"):
        rows = rows_of(out, split)
        assert rows.dtype == np.uint16 and rows.shape[1] == TINY_BLOCK + 1
        assert (rows[1:, 0] == rows[:-1, -1]).all()  # neighbours share one boundary token
        stream = np.concatenate([rows[0]] + [row[1:] for row in rows[1:]]).tolist()
        # every position after the first is a target exactly once: rows * TINY_BLOCK targets, no overlap
        assert len(stream) - 1 == len(rows) * TINY_BLOCK
        segments = [[EOT] + s for s in split_on(stream, EOT)]
        complete = segments[:-1]  # the last one may be cut short by the end of the stream
        documents = [text for text, ids in encoded.items() if ids in complete]
        assert len(documents) == len(complete), "a packed segment is not any document's exact tokens"
        seen_documents.append(set(documents))
        stats = metadata["splits"][split]
        assert stats["rows"] == len(rows)
        assert stats["dropped_tokens"] == stats["tokens"] - len(rows) * TINY_BLOCK
    assert not seen_documents[0] & seen_documents[1]  # no document in both splits
    total_tokens = sum(len(ids) for ids in encoded.values())
    assert metadata["splits"]["train"]["tokens"] + metadata["splits"]["validation"]["tokens"] == total_tokens
    assert metadata["splits"]["train"]["documents"] + metadata["splits"]["validation"]["documents"] == 8
    assert metadata["splits"]["validation"]["tokens"] >= 60
    assert metadata["dtype"] == "uint16" and metadata["block_size"] == TINY_BLOCK
    assert metadata["tokenizer"]["eot_id"] == EOT and metadata["tokenizer"]["vocab_size"] == 50257
    assert json.loads((out / "prepare_metadata.json").read_text())["splits"] == metadata["splits"]
    saved = datasets.load_from_disk(str(out))
    assert set(saved) == {"train", "validation"}
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out / "tokenizer")("Hello world")["input_ids"] == [15496, 995]
















def test_bad_inputs_give_one_line_errors(corpus, tmp_path, ranks_file, reference, capsys):
    common = ["--tokenizer", ranks_file, "--num_proc", "1", "--block_size", str(TINY_BLOCK)]
    expect_error(capsys, ["--output_dir", str(tmp_path / "a"), "--dataset", "text", "--data_files",
                          str(tmp_path / "nothing" / "*.txt"), *common], "no file matches")
    (tmp_path / "records.jsonl").write_text('{"content": "a"}\n{"content": "b"}\n')
    expect_error(capsys, ["--output_dir", str(tmp_path / "b"), "--dataset", "json", "--data_files",
                          str(tmp_path / "records.jsonl"), *common], "its columns are ['content']")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "e.txt").write_text("")
    expect_error(capsys, ["--output_dir", str(tmp_path / "c"), "--dataset", "text", "--data_files",
                          str(tmp_path / "empty" / "e.txt"), *common], "holds no text")
    expect_error(capsys, ["--output_dir", str(tmp_path / "d"), "--dataset", "text", "--data_files",
                          str(corpus / "*.txt"), "--tokenizer", str(tmp_path / "missing.tiktoken")],
                 "cannot load tokenizer")
    expect_error(capsys, ["--output_dir", str(tmp_path / "e"), "--dataset", "text", "--data_files",
                          str(corpus / "*.txt"), "--val_tokens", "1000000", *common], "takes every document")
    all_tokens = sum(1 + len(reference.encode_ordinary(text)) for text in DOCUMENTS)
    for folder, val_tokens in (("f", 1_000_000), ("g", all_tokens)):  # short of validation; nothing left to train
        expect_error(capsys, ["--output_dir", str(tmp_path / folder), "--dataset", "text", "--data_files",
                              str(corpus / "*.txt"), "--streaming", "--val_tokens", str(val_tokens), *common],
                     "the stream ended before")
    for folder in "abcdefg":  # nothing written, not even the staging directory of a run that failed late
        assert not (tmp_path / folder).exists() and not (tmp_path / f"{folder}.tmp").exists()







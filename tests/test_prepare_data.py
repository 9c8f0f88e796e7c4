"""prepare_data.py against tiktoken (the reference encoder) and hand-checked packing invariants."""

import json
import os
from collections import Counter
from contextlib import ExitStack

import datasets
import numpy as np
from support.corpus import DOCUMENTS, EOT, expect_error, prepare_corpus, rows_of, split_on
from support.hub import HubStandIn, prepare_command, readme_command
from support.runs import run_together
from support.tiny import TINY_BLOCK

from formats.packed_data import FINEWEB_EDU


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


def test_the_readme_fineweb_edu_command_survives_the_hubs_transient_faults(fineweb_hub, tmp_path, reference):
    """The README's FineWeb-Edu command, as written, against a stand-in of the hub: cached and streamed, each
    through a 429 with Retry-After, a 503 twice, a connection dropped half-way, a slow answer and a wrong body."""
    command = readme_command("python prepare_data.py --output_dir data/fineweb_edu_10B")
    first, second, third = fineweb_hub.shards
    runs, hubs = {}, []
    with ExitStack() as serving:
        for mode, extra in (("cached", []), ("streamed", ["--streaming", "--val_tokens", "20000"])):
            hub = serving.enter_context(HubStandIn(fineweb_hub.root))
            hubs.append(hub)
            hub.fail(first, 429, retry_after=1)
            hub.corrupt(first)
            hub.fail(second, 503, times=2)
            hub.drop(third)
            hub.slow(third, seconds=3)
            args = [*command, "--download_retry_wait", "0.2"]
            args[args.index("data/fineweb_edu_10B")] = str(tmp_path / mode)
            runs[mode] = prepare_command(hub, tmp_path / f"home-{mode}", [*args, *extra])
        results = dict(zip(runs, run_together(list(runs.values()), env=dict(os.environ), timeout=240), strict=True))
    encoded = [[EOT] + reference.encode_ordinary(text) for text in fineweb_hub.documents]
    for mode, result in results.items():
        assert result.returncode == 0, result.stderr[-3000:]
        assert "HTTP 503; trying again" in result.stderr and "did not match the hub's digest" in result.stderr
        assert "U+FFFD" not in result.stdout  # the kit decoded no bytes of a parquet source
        metadata = json.loads((tmp_path / mode / "prepare_metadata.json").read_text())
        assert metadata["source"]["dataset_revision"] == hubs[0].repo("datasets", FINEWEB_EDU).commit
        assert metadata["source"]["files"] == list(fineweb_hub.shards)
        splits = metadata["splits"]
        assert sum(s["tokens"] for s in splits.values()) == sum(map(len, encoded))
        assert sum(s["documents"] for s in splits.values()) == len(encoded)
    for hub in hubs:  # each shard's body was read once more for each fault, and no more
        assert [hub.downloads(path) for path in fineweb_hub.shards] == [3, 3, 3]

    # cached: every complete segment is one served document, none more often than it was served
    served = Counter(map(tuple, encoded))
    found = Counter()
    for split in ("train", "validation"):
        rows = rows_of(tmp_path / "cached", split)
        stream = np.concatenate([rows[0]] + [row[1:] for row in rows[1:]]).tolist()
        found.update(tuple([EOT] + s) for s in split_on(stream, EOT)[:-1])
    assert not found - served and sum(found.values()) > 0.9 * len(encoded)

    # streamed: validation then training is the served documents in order, each once, cut only at each tail
    held_out = json.loads((tmp_path / "streamed" / "prepare_metadata.json").read_text())["splits"]["validation"]
    in_order = {"validation": encoded[: held_out["documents"]], "train": encoded[held_out["documents"]:]}
    for split, documents in in_order.items():
        rows = rows_of(tmp_path / "streamed", split)
        stream = np.concatenate([rows[0]] + [row[1:] for row in rows[1:]]).tolist()
        expected = [token for ids in documents for token in ids]
        assert stream == expected[: len(stream)] and len(expected) - len(stream) < 1024

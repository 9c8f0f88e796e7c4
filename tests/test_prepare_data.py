"""prepare_data.py against tiktoken (the reference encoder) and hand-checked packing invariants."""

import json

import datasets
import numpy as np
import pytest
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

from formats.packed_data import PackedRows
from preparation.splits import validation_budget
from preparation.tokenizer import DocumentTokenizer, gpt2_mergeable_ranks
from preparation.tokenizer import tokenizer_from_source as load_tokenizer
from prepare_data import PrepareArguments, main, prepare

EOT = 50256
BLOCK = 32
DOCUMENTS = [
    "Hello world",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "Numbers 1234567 and   spaces\t\ttabs, naïve café, 日本語, emoji 🎉 and it's we'll they've.",
    "The slings and arrows of outrageous fortune,\n\nOr to take arms against a sea of troubles",
    " leading space and trailing space ",
    "A" * 300,
    "And by opposing end them. To die, to sleep; no more; and by a sleep to say we end the heart-ache",
    "the thousand natural shocks that flesh is heir to: 'tis a consummation devoutly to be wish'd.",
]


@pytest.fixture(scope="session")
def ranks_file(shared_data):
    return str(shared_data / "gpt2.tiktoken")


@pytest.fixture(scope="session")
def reference(ranks_file):
    """tiktoken's own GPT-2 encoding (r50k_base's pattern and ranks): the independent reference."""
    return tiktoken.Encoding("r50k_reference", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(ranks_file),
                             special_tokens={"<|endoftext|>": EOT})


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(DOCUMENTS):
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return folder


def run(corpus, out, ranks_file, **overrides):
    fields = dict(output_dir=str(out), dataset="text", data_files=[str(corpus / "*.txt")], tokenizer=ranks_file,
                  block_size=BLOCK, val_tokens=60, num_proc=1)
    fields.update(overrides)
    return prepare(PrepareArguments(**fields))


def rows_of(out, split):
    rows = PackedRows(datasets.load_from_disk(str(out))[split])
    return rows.take(np.arange(len(rows)))


def test_tiktoken_file_becomes_a_tokenizer_with_gpt2_ids(ranks_file, reference):
    tokenizer = load_tokenizer(ranks_file)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert len(tokenizer) == 50257 and tokenizer.eos_token_id == EOT
    for text in DOCUMENTS:
        assert tokenizer(text)["input_ids"] == reference.encode_ordinary(text), text
    assert tokenizer.decode(reference.encode_ordinary(DOCUMENTS[2])) == DOCUMENTS[2]


def test_tiktoken_and_tokenizers_backends_give_identical_ids(ranks_file, tmp_path):
    tokenizer = load_tokenizer(ranks_file)
    tokenizer.save_pretrained(tmp_path / "tok")
    ranks = gpt2_mergeable_ranks(tokenizer)
    assert ranks == load_tiktoken_bpe(ranks_file)  # recovered from the HF tokenizer, byte for byte
    import pyarrow as pa

    batch = pa.table({"text": DOCUMENTS})
    fast = DocumentTokenizer(str(tmp_path / "tok"), "text", EOT, "uint16", ranks)(batch)
    slow = DocumentTokenizer(str(tmp_path / "tok"), "text", EOT, "uint16", None)(batch)
    assert fast.equals(slow)


def test_exact_token_stream_packing_and_metadata(corpus, tmp_path, ranks_file, reference):
    out = tmp_path / "out"
    metadata = run(corpus, out, ranks_file)
    encoded = {text: [EOT] + reference.encode_ordinary(text) for text in DOCUMENTS}
    seen_documents = []
    for split in ("train", "validation"):
        rows = rows_of(out, split)
        assert rows.dtype == np.uint16 and rows.shape[1] == BLOCK + 1
        assert (rows[1:, 0] == rows[:-1, -1]).all()  # neighbours share one boundary token
        stream = np.concatenate([rows[0]] + [row[1:] for row in rows[1:]]).tolist()
        # every position after the first is a target exactly once: rows * BLOCK targets, no overlap
        assert len(stream) - 1 == len(rows) * BLOCK
        segments = [[EOT] + s for s in _split_on(stream, EOT)]
        complete = segments[:-1]  # the last one may be cut short by the end of the stream
        documents = [text for text, ids in encoded.items() if ids in complete]
        assert len(documents) == len(complete), "a packed segment is not any document's exact tokens"
        seen_documents.append(set(documents))
        stats = metadata["splits"][split]
        assert stats["rows"] == len(rows)
        assert stats["dropped_tokens"] == stats["tokens"] - len(rows) * BLOCK
    assert not seen_documents[0] & seen_documents[1]  # no document in both splits
    total_tokens = sum(len(ids) for ids in encoded.values())
    assert metadata["splits"]["train"]["tokens"] + metadata["splits"]["validation"]["tokens"] == total_tokens
    assert metadata["splits"]["train"]["documents"] + metadata["splits"]["validation"]["documents"] == 8
    assert metadata["splits"]["validation"]["tokens"] >= 60
    assert metadata["dtype"] == "uint16" and metadata["block_size"] == BLOCK
    assert metadata["tokenizer"]["eot_id"] == EOT and metadata["tokenizer"]["vocab_size"] == 50257
    assert json.loads((out / "prepare_metadata.json").read_text())["splits"] == metadata["splits"]
    saved = datasets.load_from_disk(str(out))
    assert set(saved) == {"train", "validation"}
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out / "tokenizer")("Hello world")["input_ids"] == [15496, 995]


def _split_on(stream, separator):
    """Segments between separators (the first element is the separator itself)."""
    segments, current = [], None
    for token in stream:
        if token == separator:
            if current is not None:
                segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    return segments


def test_output_is_identical_for_one_and_two_processes(corpus, tmp_path, ranks_file):
    run(corpus, tmp_path / "one", ranks_file, num_proc=1)
    run(corpus, tmp_path / "two", ranks_file, num_proc=2)
    for split in ("train", "validation"):
        assert np.array_equal(rows_of(tmp_path / "one", split), rows_of(tmp_path / "two", split))


def test_default_validation_size_is_proportional():
    assert validation_budget(None, 10_000_000_000, 1024) == 100_000_000
    assert validation_budget(None, 2_000_000, 1024) == 100_000
    assert validation_budget(None, 1000, 1024) == 4096


def test_single_document_corpus_carves_validation_from_the_stream(tmp_path, ranks_file, reference):
    text = " ".join(DOCUMENTS * 6)
    (tmp_path / "one.txt").write_text(text)
    metadata = run(tmp_path, tmp_path / "out", ranks_file, data_files=[str(tmp_path / "one.txt")], val_tokens=64)
    train, val = rows_of(tmp_path / "out", "train"), rows_of(tmp_path / "out", "validation")
    assert len(val) == 2 and train[-1, -1] == val[0, 0]
    total = len(reference.encode_ordinary(text)) + 1
    assert metadata["splits"]["train"]["tokens"] + metadata["splits"]["validation"]["tokens"] == total


def test_rerun_with_same_arguments_is_a_no_op(corpus, tmp_path, ranks_file, capsys):
    run(corpus, tmp_path / "out", ranks_file)
    stamp = (tmp_path / "out" / "prepare_metadata.json").stat().st_mtime_ns
    run(corpus, tmp_path / "out", ranks_file)
    assert "already holds this preparation" in capsys.readouterr().out
    assert (tmp_path / "out" / "prepare_metadata.json").stat().st_mtime_ns == stamp


def test_non_utf8_bytes_are_replaced_and_counted(corpus, tmp_path, ranks_file):
    (corpus / "broken.txt").write_bytes(b"valid start \xff\xfe then more text " * 4)
    metadata = run(corpus, tmp_path / "out", ranks_file)
    assert metadata["replacement_chars"] == 8


def expect_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars may come before it
    assert err.startswith("prepare_data.py: error:"), err
    assert message in err, err


def test_bad_inputs_give_one_line_errors(corpus, tmp_path, ranks_file, reference, capsys):
    common = ["--tokenizer", ranks_file, "--num_proc", "1", "--block_size", str(BLOCK)]
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


def test_output_holding_other_data_is_refused_and_kept(corpus, tmp_path, ranks_file, capsys):
    run(corpus, tmp_path / "out", ranks_file)
    before = rows_of(tmp_path / "out", "train")
    argv = ["--output_dir", str(tmp_path / "out"), "--dataset", "text", "--data_files", str(corpus / "*.txt"),
            "--tokenizer", ranks_file, "--block_size", "16", "--num_proc", "1", "--val_tokens", "60"]
    expect_error(capsys, argv, "already holds other data; pass --overwrite")
    assert np.array_equal(rows_of(tmp_path / "out", "train"), before)
    assert main(argv + ["--overwrite"]) == 0
    assert rows_of(tmp_path / "out", "train").shape[1] == 17
    assert not (tmp_path / "out.tmp").exists() and not (tmp_path / "out.old").exists()


def test_packed_rows_read_across_arrow_chunks_in_place(tmp_path):
    reference = np.random.default_rng(0).integers(0, 50257, size=(50, 9)).astype(np.uint16)
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("uint16"), length=9)})
    split = datasets.Dataset.from_dict({"input_ids": reference.tolist()}, features=features)
    split.save_to_disk(str(tmp_path / "split"), max_shard_size=200)  # many shards: many Arrow chunks
    loaded = datasets.load_from_disk(str(tmp_path / "split"))
    rows = PackedRows(loaded)
    assert len(rows.chunks) > 3 and len(rows) == 50 and rows.dtype == np.uint16
    indices = np.array([49, 0, 17, 17, 33, 2])
    assert np.array_equal(rows.take(indices), reference[indices])
    assert all(not chunk.flags.owndata for chunk in rows.chunks)  # views of the mapped files, not copies


def test_streaming_mode_packs_the_stream_exactly(corpus, tmp_path, ranks_file, reference):
    one = run(corpus, tmp_path / "one", ranks_file, streaming=True, val_tokens=40, num_proc=1)
    two = run(corpus, tmp_path / "two", ranks_file, streaming=True, val_tokens=40, num_proc=2)
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
        complete = [[EOT] + s for s in _split_on(stream, EOT)][:-1]
        assert all(ids in encoded.values() for ids in complete)
        seen.append({tuple(ids) for ids in complete})
        stats = one["splits"][split]
        assert stats["dropped_tokens"] == stats["tokens"] - len(rows) * BLOCK <= BLOCK  # only the stream's tail
    assert not seen[0] & seen[1]

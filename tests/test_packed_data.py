"""formats/packed_data.py: the prepared-data format, read in place and split into inputs and targets."""


import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.tiny import tiny_config

from formats.packed_data import (
    NotPreparedError,
    PackedRows,
    data_identity,
    identity_difference,
    inputs_and_targets,
    load_splits,
    read_metadata,
    row_dtype,
    rows_sha256,
    score_next_tokens,
)
from modeling_gpt2_scratch import GPT2ScratchForCausalLM


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


def test_a_row_is_inputs_then_the_same_tokens_one_later_as_targets():
    rows = np.array([[5, 6, 7, 8], [8, 9, 10, 11]], dtype=np.uint16)
    for given in (rows, torch.from_numpy(rows.astype(np.int32))):
        inputs, targets = inputs_and_targets(given)
        assert inputs.dtype == targets.dtype == torch.int64 and inputs.is_contiguous() and targets.is_contiguous()
        assert inputs.tolist() == [[5, 6, 7], [8, 9, 10]] and targets.tolist() == [[6, 7, 8], [9, 10, 11]]


def test_ids_past_65536_need_uint32_rows():
    assert (row_dtype(50257), row_dtype(65536), row_dtype(65537)) == ("uint16", "uint16", "uint32")


def test_a_directory_that_is_not_prepared_data_is_named(tmp_path):
    with pytest.raises(NotPreparedError, match=f"{tmp_path} is not prepared data .* run prepare_data.py first"):
        load_splits(tmp_path)


def test_identity_is_what_the_data_is_not_when_or_where_it_was_written(tiny_data):
    metadata = read_metadata(tiny_data)
    identity = data_identity(metadata)
    splits = load_splits(tiny_data)
    assert identity["rows_sha256"] == {name: rows_sha256(splits[name]) for name in ("train", "validation")}
    assert "data_files" not in identity["source"]
    elsewhere = {**metadata, "created": "2030-01-01T00:00:00+00:00",
                 "source": {**metadata["source"], "data_files": ["/another/disk/*.py"]},
                 "arguments": {**metadata["arguments"], "data_files": ["/another/disk/*.py"]}}
    assert identity_difference(identity, data_identity(elsewhere)) is None
    changed = {**identity, "rows_sha256": {**identity["rows_sha256"], "train": "f" * 64}}
    assert identity_difference(identity, changed) == (
        f"rows_sha256.train: {identity['rows_sha256']['train'][:12]}... vs ffffffffffff...")


def test_ours_and_stock_score_the_same_aligned_targets():
    ours = GPT2ScratchForCausalLM(tiny_config()).eval()
    stock = ours.to_gpt2().eval()
    inputs, targets = inputs_and_targets(torch.randint(0, 101, (3, 17)))
    with torch.no_grad():
        logits = stock(inputs).logits
        by_hand = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()  # every target, no shift
        for model in (ours, stock):
            assert score_next_tokens(model, inputs, targets).loss.item() == pytest.approx(by_hand, rel=1e-5)


def test_a_preparation_of_an_earlier_version_is_refused_with_what_to_do(tiny_data, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_data, old)
    metadata = json.loads((old / "prepare_metadata.json").read_text())
    del metadata["rows_sha256"]  # what prepare_data.py wrote before it recorded its rows
    (old / "prepare_metadata.json").write_text(json.dumps(metadata))
    expected = f"^{old} was prepared by an earlier prepare_data.py, .*: prepare it again$"
    with pytest.raises(NotPreparedError, match=expected):
        read_metadata(old)

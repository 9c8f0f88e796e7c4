"""benchmarks/data_loading.py: the loop's DataLoader read as the loop reads it."""

import hashlib

import numpy as np

from benchmarks import data_loading
from formats.packed_data import PackedRows, load_splits


def test_data_loading_reads_the_loops_batches_with_and_without_workers(tiny_data):
    report = data_loading.main(["--data_dir", str(tiny_data), "--micro_batch", "4", "--workers", "0,1",
                                "--batches", "5", "--repeats", "1"])
    assert [r["workers"] for r in report["results"]] == [0, 1]
    # The first micro-batch, by the data order's contract: epoch 0's permutation drawn from (seed, 0), its
    # first 4 rows in row order, inputs without each row's last token.
    rows = PackedRows(load_splits(tiny_data)["train"])
    first = np.sort(np.random.default_rng([1337, 0]).permutation(len(rows))[:4])
    expected = hashlib.sha256(rows.take(first)[:, :-1].astype(np.int64).tobytes()).hexdigest()
    assert [r["first_batch_sha256"] for r in report["results"]] == [expected, expected]

"""preparation/packing.py: rows of block_size + 1 tokens with stride block_size, by hand."""

import datasets
import numpy as np
import pyarrow as pa
import pytest

from preparation import packing
from preparation.packing import documents_stream, pack_stream


def test_rows_overlap_by_one_token_and_every_token_but_the_first_is_a_target_once():
    rows = pack_stream(np.arange(11, dtype=np.uint16), block_size=3)
    assert rows.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]  # token 10 waits for the next stream
    assert rows.dtype == np.uint16 and rows.flags.c_contiguous
    targets = rows[:, 1:].ravel().tolist()
    assert targets == list(range(1, 10))


def test_a_stream_shorter_than_one_row_packs_into_none():
    assert pack_stream(np.arange(3, dtype=np.uint32), block_size=3).shape == (0, 4)
    assert pack_stream(np.arange(4, dtype=np.uint32), block_size=3).tolist() == [[0, 1, 2, 3]]


def test_documents_stream_is_the_chosen_documents_in_order_across_arrow_chunks():
    """By hand: document d holds tokens [100 d, 100 d + 1, ..., 100 d + d] (d + 1 of them); three Arrow chunks."""
    documents = [list(range(100 * d, 100 * d + d + 1)) for d in range(9)]
    chunks = [pa.array(documents[a:b], pa.large_list(pa.uint16())) for a, b in ((0, 2), (2, 7), (7, 9))]
    table = pa.Table.from_batches([pa.RecordBatch.from_arrays([chunk], ["input_ids"]) for chunk in chunks])
    dataset = datasets.Dataset(table)
    assert dataset.data.column("input_ids").num_chunks == 3
    ids = np.array([0, 1, 2, 5, 6, 7, 8])  # runs 0-2 (across chunks 1 and 2) and 5-8 (across chunks 2 and 3)
    expected = [token for d in ids for token in documents[d]]
    assert documents_stream(dataset, ids).tolist() == expected
    assert documents_stream(dataset, np.array([4])).tolist() == documents[4]


def test_a_window_of_the_stream_reads_only_the_documents_it_touches():
    documents = [list(range(100 * d, 100 * d + d + 1)) for d in range(9)]
    dataset = datasets.Dataset.from_dict({"input_ids": documents})
    ids = np.array([1, 2, 4, 5, 8])
    stream = [token for d in ids for token in documents[d]]
    lengths = np.array([len(documents[d]) for d in ids])
    for start, stop in [(0, 1), (0, len(stream)), (2, 5), (3, 12), (len(stream) - 1, len(stream))]:
        assert packing.stream_window(dataset, ids, lengths, start, stop).tolist() == stream[start:stop]


@pytest.mark.parametrize("piece_rows", [1, 2, 1000])
def test_groups_cut_into_pieces_pack_the_rows_of_whole_groups(monkeypatch, piece_rows):
    """By hand: each group of 4 documents packs on its own; rows are the same however many a map call writes."""
    monkeypatch.setattr(packing, "PACK_GROUP_DOCUMENTS", 4)
    monkeypatch.setattr(packing, "PIECE_ROWS", piece_rows)
    rng = np.random.default_rng(0)
    documents = [rng.integers(0, 50_000, size=rng.integers(1, 12)).tolist() for _ in range(11)]
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("uint16"))})
    dataset = datasets.Dataset.from_dict({"input_ids": documents}, features=features)
    ids = np.array([0, 1, 2, 4, 5, 6, 7, 9, 10])  # groups [0 1 2 4] [5 6 7 9] [10]
    lengths = packing.document_lengths(dataset)
    packed = packing.pack_documents(dataset, ids, lengths, 3, "train", f"pieces-{piece_rows}")
    expected = [row for group in (ids[:4], ids[4:8], ids[8:])
                for row in pack_stream(np.array([t for d in group for t in documents[d]], np.uint16), 3).tolist()]
    assert packed["input_ids"] == expected and len(expected) > 4
    assert packed.features["input_ids"] == datasets.List(datasets.Value("uint16"), length=4)

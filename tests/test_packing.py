"""preparation/packing.py: rows of block_size + 1 tokens with stride block_size, by hand."""

import datasets
import numpy as np
import pyarrow as pa

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

"""preparation/packing.py: rows of block_size + 1 tokens with stride block_size, by hand."""

import numpy as np

from preparation.packing import pack_stream


def test_rows_overlap_by_one_token_and_every_token_but_the_first_is_a_target_once():
    rows = pack_stream(np.arange(11, dtype=np.uint16), block_size=3)
    assert rows.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]  # token 10 waits for the next stream
    assert rows.dtype == np.uint16 and rows.flags.c_contiguous
    targets = rows[:, 1:].ravel().tolist()
    assert targets == list(range(1, 10))


def test_a_stream_shorter_than_one_row_packs_into_none():
    assert pack_stream(np.arange(3, dtype=np.uint32), block_size=3).shape == (0, 4)
    assert pack_stream(np.arange(4, dtype=np.uint32), block_size=3).tolist() == [[0, 1, 2, 3]]

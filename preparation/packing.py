"""A token stream cut into training rows: `block_size + 1` tokens a row, stride `block_size`.

Inputs are `row[:-1]`, targets `row[1:]`, so neighbouring rows share one token and every token of the
stream but the first is a target exactly once.
"""

import math
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats.packed_data import row_features, rows_table

# Documents packed together; a group leaves fewer than block_size tokens untargeted (0.1% of a FineWeb group).
PACK_GROUP_DOCUMENTS = 10_000
# Rows a map call writes (8 MB of uint16 rows of 1,025 tokens), so the same few buffers serve every call: a whole
# group's stream and rows (up to hundreds of MB each) were new memory, and first touching it cost more than the
# copies themselves (packing 107M tokens: 1.16 s by group, 0.23 s by piece).
PIECE_ROWS = 4096


def pack_stream(stream: np.ndarray, block_size: int) -> np.ndarray:
    """Rows i = stream[i * block_size : (i + 1) * block_size + 1]: (rows, block_size + 1), neighbours sharing a token.

    The tokens after the last row's end (fewer than block_size) are left over; stream[rows * block_size:]
    is where a continuing stream picks up.
    """
    rows = max(0, (len(stream) - 1) // block_size)
    if rows == 0:
        return np.empty((0, block_size + 1), dtype=stream.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(stream, block_size + 1)
    return np.ascontiguousarray(windows[::block_size][:rows])


class BlockPacker:
    """`datasets.map` function over pieces of groups: group g packs documents `doc_ids[g * G : (g + 1) * G]`
    into rows of block_size + 1 tokens with stride block_size, and a piece (group, first_row, rows) is a run of
    those rows, cut from the part of the group's stream it covers.

    Groups are fixed by document, so the output does not depend on how the work is divided. Rows
    never cross a group boundary; what a group leaves over (fewer than block_size tokens) is never a
    target, and is counted by the caller.
    """

    def __init__(self, documents: datasets.Dataset, doc_ids: np.ndarray, doc_tokens: np.ndarray, block_size: int,
                 group_documents: int):
        self.documents, self.doc_ids, self.doc_tokens = documents, doc_ids, doc_tokens
        self.block_size, self.group_documents = block_size, group_documents

    def __call__(self, batch: dict) -> pa.Table:
        (group,), (first_row,), (rows,) = batch["group"], batch["first_row"], batch["rows"]
        ids = self.doc_ids[group * self.group_documents : (group + 1) * self.group_documents]
        start = first_row * self.block_size
        window = stream_window(self.documents, ids, self.doc_tokens[ids], start, start + rows * self.block_size + 1)
        return rows_table(pack_stream(window, self.block_size))


def group_pieces(doc_ids: np.ndarray, doc_tokens: np.ndarray, block_size: int, group_documents: int,
                 piece_rows: int) -> dict[str, list[int]]:
    """Each group's rows in runs of at most `piece_rows`: the columns group, first_row, rows."""
    pieces = {"group": [], "first_row": [], "rows": []}
    for group in range(math.ceil(len(doc_ids) / group_documents)):
        tokens = int(doc_tokens[doc_ids[group * group_documents : (group + 1) * group_documents]].sum())
        group_rows = max(0, (tokens - 1) // block_size)
        for first_row in range(0, group_rows, piece_rows):
            pieces["group"].append(group)
            pieces["first_row"].append(first_row)
            pieces["rows"].append(min(piece_rows, group_rows - first_row))
    return pieces


def stream_window(documents: datasets.Dataset, ids: np.ndarray, lengths: np.ndarray, start: int,
                  stop: int) -> np.ndarray:
    """Tokens [start, stop) of the stream of the documents at the ascending `ids`, whose token counts are
    `lengths`; only the documents the window touches are read."""
    ends = np.cumsum(lengths)
    first, last = np.searchsorted(ends, [start, stop - 1], side="right")
    skip = start - (int(ends[first]) - int(lengths[first]))
    return documents_stream(documents, ids[first : last + 1])[skip : skip + stop - start]


def documents_stream(documents: datasets.Dataset, ids: np.ndarray) -> np.ndarray:
    """The tokens of the documents at the ascending `ids`, one after another.

    Sliced run by run of consecutive ids (a split's documents are long runs between the other split's):
    Arrow's `take` on a list column builds its result element by element, several times slower.
    """
    column = documents.data.column("input_ids")
    runs = np.split(ids, np.flatnonzero(np.diff(ids) != 1) + 1)
    return np.concatenate([pc.list_flatten(column.slice(int(run[0]), len(run))).to_numpy() for run in runs])


def document_lengths(documents: datasets.Dataset) -> np.ndarray:
    """Each tokenized document's token count."""
    return pc.list_value_length(documents.data.column("input_ids")).to_numpy(zero_copy_only=False)


def pack_documents(documents: datasets.Dataset, doc_ids: np.ndarray, doc_tokens: np.ndarray, block_size: int,
                   name: str, fingerprint: str) -> datasets.Dataset:
    """The rows of the documents at `doc_ids` (tokenized, in `input_ids`; `document_lengths` tokens each),
    packed group by group."""
    pieces = group_pieces(doc_ids, doc_tokens, block_size, PACK_GROUP_DOCUMENTS, PIECE_ROWS)
    dtype = str(documents.data.column("input_ids").type.value_type)
    # One process: packing slices and copies at memory speed (0.2 s for 107M tokens in pieces), less than
    # starting workers would cost.
    # The pieces are a table in memory, whose map would keep its output in memory too (the whole split:
    # 0.4 GB at 100M tokens, measured); the rows go into a file beside the tokenized documents instead.
    cache_file = None
    if documents.cache_files:
        cache_file = str(Path(documents.cache_files[0]["filename"]).parent / f"cache-{fingerprint}.arrow")
    return datasets.Dataset.from_dict(pieces).map(
        BlockPacker(documents, doc_ids, doc_tokens, block_size, PACK_GROUP_DOCUMENTS), batched=True, batch_size=1,
        remove_columns=list(pieces), features=row_features(dtype, block_size),
        desc=f"Packing {name}", new_fingerprint=fingerprint, cache_file_name=cache_file,
    )

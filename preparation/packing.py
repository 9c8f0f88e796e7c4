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

from formats.packed_data import rows_table

# Documents packed together; a group leaves fewer than block_size tokens untargeted (0.1% of a FineWeb group).
PACK_GROUP_DOCUMENTS = 10_000


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
    """`datasets.map` function over group numbers: group g packs documents `doc_ids[g * G : (g + 1) * G]`
    into rows of block_size + 1 tokens with stride block_size.

    Groups are fixed by document, so the output does not depend on how the work is divided. Rows
    never cross a group boundary; what a group leaves over (fewer than block_size tokens) is never a
    target, and is counted by the caller.
    """

    def __init__(self, documents: datasets.Dataset, doc_ids: np.ndarray, block_size: int, group_documents: int):
        self.documents, self.doc_ids = documents, doc_ids
        self.block_size, self.group_documents = block_size, group_documents

    def __call__(self, batch: dict) -> pa.Table:
        (group,) = batch["group"]
        ids = self.doc_ids[group * self.group_documents : (group + 1) * self.group_documents]
        return rows_table(pack_stream(documents_stream(self.documents, ids), self.block_size))


def documents_stream(documents: datasets.Dataset, ids: np.ndarray) -> np.ndarray:
    """The tokens of the documents at the ascending `ids`, one after another.

    Sliced run by run of consecutive ids (a split's documents are long runs between the other split's):
    Arrow's `take` on a list column builds its result element by element, several times slower.
    """
    column = documents.data.column("input_ids")
    runs = np.split(ids, np.flatnonzero(np.diff(ids) != 1) + 1)
    return np.concatenate([pc.list_flatten(column.slice(int(run[0]), len(run))).to_numpy() for run in runs])


def pack_documents(documents: datasets.Dataset, doc_ids: np.ndarray, block_size: int, name: str,
                   fingerprint: str) -> datasets.Dataset:
    """The rows of the documents at `doc_ids` (tokenized, in `input_ids`), packed group by group."""
    groups = math.ceil(len(doc_ids) / PACK_GROUP_DOCUMENTS)
    # One process: packing slices and copies at memory speed (about 0.3 s per 30M tokens), and forked
    # workers cost memory (the process tree's anonymous peak on 30M tokens of paragraphs: 0.69 GB with
    # two workers, 0.35 GB in one process).
    # The groups are a table in memory, whose map would keep its output in memory too (the whole split:
    # 0.4 GB at 100M tokens, measured); the rows go into a file beside the tokenized documents instead.
    cache_file = None
    if documents.cache_files:
        cache_file = str(Path(documents.cache_files[0]["filename"]).parent / f"cache-{fingerprint}.arrow")
    return datasets.Dataset.from_dict({"group": list(range(groups))}).map(
        BlockPacker(documents, doc_ids, block_size, PACK_GROUP_DOCUMENTS), batched=True, batch_size=1,
        remove_columns=["group"], desc=f"Packing {name}", new_fingerprint=fingerprint, cache_file_name=cache_file,
    )

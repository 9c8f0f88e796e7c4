"""The packed-data format: what `prepare_data.py` writes and the training loop, `eval/` and the benchmarks read.

A prepared directory holds
- the splits `train` and `validation`, a `datasets.DatasetDict` saved with `save_to_disk`, whose one
  column `input_ids` is a fixed-size list of `block_size + 1` token ids a row (uint16, or uint32 for
  vocabularies past 65,536). Row i of a split's token stream is `stream[i * block_size : (i + 1) *
  block_size + 1]`: inputs are `row[:-1]`, targets `row[1:]`, and every token is a target once;
- `tokenizer/`, the tokenizer that made the ids (`save_pretrained`);
- `prepare_metadata.json`: the source, the tokenizer's vocabulary size and end-of-text id, the block
  size, the row dtype, each split's documents, tokens, rows and untargeted tokens, and a sha256 of each
  split's rows (`rows_sha256`).

`data_identity` says what the data is by its content, not when or where it was written: a checkpoint
records it, and resumes on any preparation with the same identity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # torch is imported where rows become tensors: preparing data never needs it
    import torch

METADATA_FILE = "prepare_metadata.json"
TOKENIZER_SUBDIR = "tokenizer"
TOKENS_COLUMN = "input_ids"
FINEWEB_EDU = "HuggingFaceFW/fineweb-edu"  # the reproduction's corpus, and prepare_data's default source
LOCAL_BUILDERS = ("text", "json", "parquet", "csv")  # a source named by one of these is local files


class NotPreparedError(Exception):
    """A directory that is not prepare_data.py output."""


def row_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def row_features(dtype: str, block_size: int) -> datasets.Features:
    return datasets.Features({TOKENS_COLUMN: datasets.List(datasets.Value(dtype), length=block_size + 1)})


def rows_table(rows: np.ndarray) -> pa.Table:
    """(n, block_size + 1) token rows as an Arrow table in the split's layout."""
    return pa.table({TOKENS_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), rows.shape[1])})


def inputs_and_targets(rows: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, block_size + 1) rows -> inputs `row[:-1]` and their aligned targets `row[1:]`, int64 and contiguous
    (stock transformers models `.view()` their labels)."""
    import torch

    batch = torch.from_numpy(rows.astype(np.int64)) if isinstance(rows, np.ndarray) else rows.long()
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


def score_next_tokens(model, inputs: torch.Tensor, targets: torch.Tensor, return_logits: bool = False, **kwargs):
    """The model's output on `inputs`, its `.loss` the next-token loss against `targets` already aligned with
    them (`inputs_and_targets`). `labels` and `shift_labels` both: stock transformers models shift `labels`
    unless given `shift_labels`, and this model takes either, so any causal LM scores the same targets.
    `return_logits=False` (the default) keeps this model on its fused loss, which never holds the batch's
    logits; stock models ignore the flag and return them anyway."""
    return model(input_ids=inputs, labels=targets, shift_labels=targets, use_cache=False, return_logits=return_logits,
                 **kwargs)


def is_local_source(source: dict) -> bool:
    """Whether the metadata's `source` is local files rather than a hub dataset."""
    return source["dataset"] in LOCAL_BUILDERS


def write_metadata(directory: Path, metadata: dict):
    (Path(directory) / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def read_metadata(data_dir: str | Path) -> dict:
    path = Path(data_dir) / METADATA_FILE
    if not path.exists():
        raise NotPreparedError(f"{data_dir} is not prepared data ({METADATA_FILE} missing): run prepare_data.py first")
    metadata = json.loads(path.read_text())
    if "rows_sha256" not in metadata:
        raise NotPreparedError(f"{data_dir} was prepared by an earlier prepare_data.py, which did not record what "
                               "its rows are (rows_sha256): prepare it again")
    return metadata


def tokenizer_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / TOKENIZER_SUBDIR


def load_tokenizer(data_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir(data_dir))


def load_splits(data_dir: str | Path) -> datasets.DatasetDict:
    read_metadata(data_dir)  # a clear error for a directory that is not prepared data
    return datasets.load_from_disk(str(data_dir))


class PackedRows:
    """A saved split's rows of block_size + 1 tokens, read in place from the memory-mapped Arrow files.

    A split of 10B tokens spans many Arrow chunks; each stays a zero-copy numpy view, and `take`
    gathers rows across them, so no process ever holds more than the rows it asks for.
    """

    def __init__(self, split: datasets.Dataset):
        column = split.data.column(TOKENS_COLUMN)
        self.width = column.type.list_size
        self.chunks = [chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.width)
                       for chunk in column.chunks if len(chunk)]
        self.starts = np.cumsum([0] + [len(chunk) for chunk in self.chunks])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def dtype(self):
        return self.chunks[0].dtype

    def take(self, indices) -> np.ndarray:
        """Rows at `indices`, in that order, as one (len(indices), width) array."""
        indices = np.asarray(indices, dtype=np.int64)
        chunk_of = np.searchsorted(self.starts, indices, side="right") - 1
        out = np.empty((len(indices), self.width), dtype=self.dtype)
        for chunk in np.unique(chunk_of):
            here = chunk_of == chunk
            out[here] = self.chunks[chunk][indices[here] - self.starts[chunk]]
        return out


def rows_sha256(split: datasets.Dataset) -> str:
    """sha256 of a split's rows as stored, read chunk by chunk in place."""
    digest = hashlib.sha256()
    for chunk in PackedRows(split).chunks:
        digest.update(np.ascontiguousarray(chunk).data)
    return digest.hexdigest()


def saved_rows_sha256(directory: str | Path) -> dict[str, str]:
    """Each saved split's `rows_sha256`, for the metadata."""
    return {name: rows_sha256(split) for name, split in datasets.load_from_disk(str(directory)).items()}


def data_identity(metadata: dict) -> dict:
    """What prepared data is: its source (not the files' paths), tokenizer, block size, row type, split sizes
    and rows (their sha256, taken when they were written)."""
    return {
        "source": {key: value for key, value in metadata["source"].items() if key != "data_files"},
        "tokenizer": {key: metadata["tokenizer"][key] for key in ("vocab_size", "eot_id")},
        "block_size": metadata["block_size"], "dtype": metadata["dtype"],
        "splits": {name: {key: stats[key] for key in ("documents", "tokens", "rows")}
                   for name, stats in metadata["splits"].items()},
        "rows_sha256": metadata["rows_sha256"],
    }


def identity_difference(recorded: dict, current: dict, prefix: str = "") -> str | None:
    """The first place two identities differ, as `name: recorded vs current`; None when they are equal."""
    for key in sorted(recorded.keys() | current.keys()):
        mine, theirs = recorded.get(key), current.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            found = identity_difference(mine, theirs, f"{prefix}{key}.")
            if found:
                return found
        elif mine != theirs:
            return f"{prefix}{key}: {_short(mine)} vs {_short(theirs)}"
    return None


def _short(value) -> str:
    """A hash by its first 12 digits; anything else as itself."""
    return f"{value[:12]}..." if isinstance(value, str) and len(value) == 64 else repr(value)

"""Which tokens are held out for validation, and what each split holds: one policy for both pipelines.

Validation is whole documents: from a cached corpus, documents drawn in a seeded random order until they
hold `val_tokens`; from a stream, its first documents. Without `--val_tokens`, a cached corpus holds out
5% of its tokens (at most the reproduction's 100M); a stream, whose size is unknown, 100M.
"""

import math
from dataclasses import dataclass

import datasets
import numpy as np

from preparation import PrepareError

# The reproduction's FineWeb-Edu validation shard held 100M tokens; small corpora hold out 5% instead.
MAX_DEFAULT_VAL_TOKENS = 100_000_000
DEFAULT_VAL_FRACTION = 0.05


def validation_budget(requested: int | None, total_tokens: int | None, block_size: int) -> int:
    """Tokens to hold out: as requested, else 5% of a corpus of known size (at least 4 rows), at most 100M."""
    if requested is not None:
        return requested
    if total_tokens is None:  # a stream
        return MAX_DEFAULT_VAL_TOKENS
    proportional = math.ceil(total_tokens * DEFAULT_VAL_FRACTION)
    return min(MAX_DEFAULT_VAL_TOKENS, max(proportional, 4 * block_size))


def choose_validation_documents(doc_tokens: np.ndarray, val_tokens: int, seed: int) -> np.ndarray:
    """Indices of whole documents, in a seeded random order, until they hold at least `val_tokens` tokens."""
    order = np.random.default_rng(seed).permutation(len(doc_tokens))
    enough = np.searchsorted(np.cumsum(doc_tokens[order]), val_tokens) + 1
    return np.sort(order[:enough])


def split_documents(doc_tokens: np.ndarray, requested_val_tokens: int | None, block_size: int, seed: int,
                    corpus_name: str):
    """Train and validation by whole documents (of `doc_tokens` tokens each): each split's document ids, their
    document and token counts, and the validation size held out. A one-document corpus is all `train` here (see
    `carve_validation_rows`)."""
    total = int(doc_tokens.sum())
    if total == len(doc_tokens):  # nothing but the <|endoftext|> each document starts with
        raise PrepareError(f"the corpus {corpus_name} holds no text, only empty documents")
    val_tokens = validation_budget(requested_val_tokens, total, block_size)
    if len(doc_tokens) < 2:  # validation is carved from the packed rows instead
        return {"train": np.arange(1)}, {"train": {"documents": 1, "tokens": total}}, val_tokens
    val_docs = choose_validation_documents(doc_tokens, val_tokens, seed)
    if len(val_docs) == len(doc_tokens):
        raise PrepareError(f"--val_tokens {val_tokens} takes every document; the corpus holds {total} tokens")
    is_val = np.zeros(len(doc_tokens), dtype=bool)
    is_val[val_docs] = True
    splits = {"train": np.flatnonzero(~is_val), "validation": val_docs}
    counts = {
        "train": {"documents": int((~is_val).sum()), "tokens": int(doc_tokens[~is_val].sum())},
        "validation": {"documents": len(val_docs), "tokens": int(doc_tokens[is_val].sum())},
    }
    return splits, counts, val_tokens


def carve_validation_rows(packed: datasets.Dataset, counts: dict, val_tokens: int, block_size: int):
    """A single-document corpus: the last rows of its stream become validation. Returns both splits and
    their counts."""
    val_rows = math.ceil(val_tokens / block_size)
    if val_rows >= len(packed):
        raise PrepareError(f"--val_tokens {val_tokens} needs {val_rows} rows; the corpus packs into {len(packed)}")
    splits = datasets.DatasetDict({
        "train": packed.select(range(len(packed) - val_rows)),
        "validation": packed.select(range(len(packed) - val_rows, len(packed))),
    })
    train_tokens = len(splits["train"]) * block_size + 1  # + the stream's first token, never a target
    counts = {"train": {"documents": 1, "tokens": train_tokens},
              "validation": {"documents": 0, "tokens": counts["train"]["tokens"] - train_tokens}}
    return splits, counts


def split_statistics(counts: dict, rows: dict, block_size: int) -> dict:
    """Each split's documents, tokens, rows, and the tokens packing left untargeted (the metadata's `splits`)."""
    return {name: {**counts[name], "rows": rows[name],
                   "dropped_tokens": counts[name]["tokens"] - rows[name] * block_size}
            for name in ("train", "validation")}


@dataclass
class PreparedSplits:
    """What either pipeline reports of the splits it saved."""

    statistics: dict  # split_statistics(...)
    val_tokens: int  # the validation size held out (requested, or the default policy's)
    replacement_chars: int  # undecodable bytes replaced by U+FFFD in the documents read

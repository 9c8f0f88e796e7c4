"""The pipeline over a stream (`--streaming`): disk holds the packed output and at most one file of the source.

A process pool tokenizes the stream in order, in pieces of whole documents up to 1M characters; rows are cut
from the running token stream and written to Arrow as they come, so only the stream's last partial row is left
untargeted. Validation is the stream's first documents, up to the first document boundary past the validation
budget.
"""

import itertools
import multiprocessing
import shutil
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter
from datasets.utils import tqdm as datasets_tqdm  # tqdm that follows datasets' progress-bar switch

from formats.packed_data import row_features, rows_table
from preparation import PrepareError
from preparation.packing import pack_stream
from preparation.splits import PreparedSplits, split_statistics, validation_budget
from preparation.tokenizer import DocumentTokenizer

STREAM_BATCH_DOCUMENTS = 1000  # read from the source at a time
# A worker's task: about 250,000 tokens of text whether the documents are paragraphs or books. With 1,000
# documents a task, a task of source files held 35 MB of text, and the pipeline 1.0 GB (0.58 GB in pieces).
STREAM_BATCH_CHARS = 1 << 20

# A pool worker's tokenizer, installed once by the pool's initializer (the pool needs a module-level function).
_worker_tokenizer: DocumentTokenizer | None = None


def _install_tokenizer(tokenize: DocumentTokenizer):
    global _worker_tokenizer
    _worker_tokenizer = tokenize


def _tokenize_in_worker(texts: list[str]) -> pa.Table:
    return _worker_tokenizer.tokenize_texts(texts)


def tokenizer_pool(tokenize: DocumentTokenizer, num_proc: int):
    """Workers that each receive the tokenizer once and build its encoder once."""
    # Not fork: a streaming source may run threads (HTTP, fsspec). A fork server imports this module once
    # and forks each worker from it; spawned workers would each import it, one after another.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context.Pool(num_proc, initializer=_install_tokenizer, initargs=(tokenize,))


def tokenized_batches(documents: datasets.IterableDataset, text_column: str, pool) -> Iterator[pa.Table]:
    """The stream's documents tokenized by the pool, a piece at a time, in order: the one pass over the source."""
    batches = documents.select_columns([text_column]).iter(batch_size=STREAM_BATCH_DOCUMENTS)
    return pool.imap(_tokenize_in_worker, text_pieces(batches, text_column))


def text_pieces(batches: Iterator[dict], text_column: str) -> Iterator[list[str]]:
    """The stream's documents, in order, regrouped into pieces of at most `STREAM_BATCH_CHARS` characters (a
    longer document alone)."""
    held: list[str] = []  # the documents after the last full piece, carried into the next batch
    for batch in batches:
        texts = held + batch[text_column]
        before = np.cumsum([0] + [len(text) for text in texts])  # before[i]: the characters ahead of texts[i]
        start = 0
        while before[-1] - before[start] > STREAM_BATCH_CHARS:
            fits = int(np.searchsorted(before, before[start] + STREAM_BATCH_CHARS, side="right")) - 1
            stop = max(start + 1, fits)
            yield texts[start:stop]
            start = stop
        held = texts[start:]
    if held:
        yield held


class StreamedSplit:
    """Rows of one split, packed from tokenized batches as they come; stops at the first document boundary past
    `token_budget`, if one is given, and leaves the rest of that batch in `rest` for the next split."""

    def __init__(self, tables: Iterator[pa.Table], block_size: int, dtype: str, token_budget: int | None = None):
        self.tables, self.block_size, self.dtype, self.token_budget = tables, block_size, dtype, token_budget
        self.counts = {"documents": 0, "tokens": 0, "replacement_chars": 0, "rows": 0}
        self.rest: list[pa.Table] = []

    def packed_batches(self):
        """(n, block_size + 1) arrays of rows, one per tokenized batch of documents."""
        carry = np.empty(0, dtype=self.dtype)
        for table in self.tables:
            lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
            if self.token_budget is not None:  # keep documents up to the first one that fills the budget
                needed = self.token_budget - self.counts["tokens"]
                kept = int(np.searchsorted(np.cumsum(lengths), needed)) + 1
                self.rest = [table.slice(kept)] if kept < table.num_rows else []
                table, lengths = table.slice(0, kept), lengths[:kept]
            self.counts["documents"] += table.num_rows
            self.counts["tokens"] += int(lengths.sum())
            self.counts["replacement_chars"] += int(pc.sum(table.column("replacement_chars")).as_py() or 0)
            stream = np.concatenate([carry, pc.list_flatten(table.column("input_ids")).to_numpy()])
            packed = pack_stream(stream, self.block_size)
            carry = stream[len(packed) * self.block_size :] if len(packed) else stream
            self.counts["rows"] += len(packed)
            yield packed
            if self.token_budget is not None and self.counts["tokens"] >= self.token_budget:
                return


def write_split(split: StreamedSplit, features, path: Path, too_short: PrepareError) -> datasets.Dataset:
    """The split's rows into one Arrow file as they are packed, a whole batch of rows at a time."""
    with (ArrowWriter(features=features, path=str(path)) as writer,
          datasets_tqdm(desc=f"Streaming {path.stem}", unit=" tokens", unit_scale=True, total=split.token_budget)
          as progress):
        for packed in split.packed_batches():
            writer.write_table(rows_table(packed))
            progress.update(split.counts["tokens"] - progress.n)
        writer.finalize()
    if not split.counts["rows"]:
        raise too_short
    return datasets.Dataset.from_file(str(path))


def prepare_streamed(stream: datasets.IterableDataset, tokenize: DocumentTokenizer, output_dir: Path, *,
                     block_size: int, requested_val_tokens: int | None, num_proc: int) -> PreparedSplits:
    """Validation from the stream's first documents, training from the rest; both saved into `output_dir`."""
    val_tokens = validation_budget(requested_val_tokens, None, block_size)
    features = row_features(tokenize.dtype, block_size)
    too_short = PrepareError(f"the stream ended before {val_tokens:,} validation tokens and one training row; "
                             "pass a smaller --val_tokens")
    scratch = output_dir / "stream_cache"  # each split's rows as they are packed, before save_to_disk
    scratch.mkdir()
    with tokenizer_pool(tokenize, num_proc) as pool:  # one pool and one pass over the source for both splits
        tables = tokenized_batches(stream, tokenize.text_column, pool)
        parts = {"validation": StreamedSplit(tables, block_size, tokenize.dtype, val_tokens)}
        built = {"validation": write_split(parts["validation"], features, scratch / "validation.arrow", too_short)}
        if parts["validation"].counts["tokens"] < val_tokens:
            raise too_short
        parts["train"] = StreamedSplit(itertools.chain(parts["validation"].rest, tables), block_size, tokenize.dtype)
        built["train"] = write_split(parts["train"], features, scratch / "train.arrow", too_short)
    datasets.DatasetDict(built).save_to_disk(str(output_dir))
    shutil.rmtree(scratch)
    counts = {name: {"documents": part.counts["documents"], "tokens": part.counts["tokens"]}
              for name, part in parts.items()}
    rows = {name: part.counts["rows"] for name, part in parts.items()}
    replacement_chars = sum(part.counts["replacement_chars"] for part in parts.values())
    return PreparedSplits(split_statistics(counts, rows, block_size), val_tokens, replacement_chars)

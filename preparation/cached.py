"""The pipeline over a cached corpus: tokenize every document, hold out whole documents, pack each split.

Each step is a `datasets` operation that keeps memory bounded and is cached by a fingerprint of its input
and of every argument that changes its output, so a repeated preparation reuses the tokenized documents.
"""

import gc
from contextlib import contextmanager
from pathlib import Path

import datasets
import pyarrow.compute as pc
from datasets.fingerprint import Hasher

from preparation import PrepareError
from preparation.packing import document_lengths, pack_documents
from preparation.splits import PreparedSplits, carve_validation_rows, split_documents, split_statistics
from preparation.tokenizer import DocumentTokenizer, FileTokenizer


def prepare_cached(corpus: datasets.Dataset, tokenize: DocumentTokenizer | FileTokenizer, output_dir: Path, *,
                   block_size: int, requested_val_tokens: int | None, seed: int, num_proc: int, corpus_name: str,
                   cache_key: list, max_documents: int | None = None) -> PreparedSplits:
    """Tokenize, split, pack and save the splits into `output_dir`. `corpus` holds the documents' text, or
    references to text files that `tokenize` (a `FileTokenizer`) reads where they lie."""
    num_proc = max(1, min(num_proc, len(corpus)))
    with shared_with_forked_workers():
        tokenized = corpus.with_format("arrow").map(
            tokenize, batched=True, batch_size=tokenize.batch_size, num_proc=num_proc,
            remove_columns=corpus.column_names, desc="Tokenizing",
            new_fingerprint=step_fingerprint(corpus, "tokenize", cache_key),
        )
    if max_documents is not None and len(tokenized) > max_documents:  # files: their documents are known only now
        tokenized = tokenized.select(range(max_documents))
    if len(tokenized) == 0:
        raise PrepareError(f"the corpus {corpus_name} holds no documents")
    replacement_chars = int(pc.sum(tokenized.data.column("replacement_chars")).as_py() or 0)
    tokenized = tokenized.remove_columns("replacement_chars")
    doc_tokens = document_lengths(tokenized)
    doc_ids, counts, val_tokens = split_documents(doc_tokens, requested_val_tokens, block_size, seed, corpus_name)
    packed = datasets.DatasetDict({
        name: pack_documents(tokenized, ids, doc_tokens, block_size, name,
                             step_fingerprint(tokenized, f"pack-{name}", cache_key))
        for name, ids in doc_ids.items()
    })
    if "validation" not in packed:  # one document: its stream is cut in two
        packed, counts = carve_validation_rows(packed["train"], counts, val_tokens, block_size)
    if len(packed["train"]) == 0:
        raise PrepareError(f"the corpus is too small for one training row of {block_size + 1} tokens")
    packed.save_to_disk(str(output_dir), num_proc=None)
    rows = {name: len(split) for name, split in packed.items()}
    return PreparedSplits(split_statistics(counts, rows, block_size), val_tokens, replacement_chars)


@contextmanager
def shared_with_forked_workers():
    """This process's objects kept out of the garbage collector's reach while `map` workers forked from it run: a
    collection in a worker writes to every object it visits, which copies the pages it shared with this process
    (32 MB in each worker and in datasets' queue manager, measured on 100M tokens of pages)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def step_fingerprint(dataset: datasets.Dataset, step: str, cache_key: list) -> str:
    """Cache key of a map step: its input's fingerprint and everything that changes its output."""
    return Hasher.hash([dataset._fingerprint, step, *cache_key])

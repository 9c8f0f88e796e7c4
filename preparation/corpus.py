"""The source documents: a hub dataset or local text/json/parquet/csv files, cached by `datasets` or streamed."""

import glob
import os
from dataclasses import dataclass

import datasets

from formats.packed_data import LOCAL_BUILDERS
from preparation import PrepareError


@dataclass(frozen=True)
class CorpusSource:
    dataset: str  # a hub id, or one of LOCAL_BUILDERS for local files
    dataset_config: str | None
    split: str
    data_files: list[str] | None
    text_column: str
    text_unit: str  # plain-text files: one document per file, paragraph or line
    max_documents: int | None
    streaming: bool
    cache_dir: str | None

    @property
    def is_local(self) -> bool:
        return self.dataset in LOCAL_BUILDERS

    @property
    def name(self) -> str:
        """How error messages name the corpus."""
        return str(self.data_files or self.dataset)

    def description(self) -> dict:
        """The metadata's `source`: what the documents are, not where this machine keeps them."""
        keys = ("dataset", "split", "data_files", "text_column", "max_documents")
        keys += ("text_unit",) if self.dataset == "text" else ("dataset_config",) if not self.is_local else ()
        return {key: getattr(self, key) for key in keys}


def load_corpus(source: CorpusSource, num_proc: int = 1) -> datasets.Dataset | datasets.IterableDataset:
    """The documents, as one text column; refuses missing files, missing columns and empty corpora.

    A cached corpus of several files is converted to Arrow by up to `num_proc` processes, files split
    between them in order (the documents' order is the same for any number)."""
    if source.is_local and not source.data_files:
        raise PrepareError(f"--dataset {source.dataset} needs --data_files")
    local_files = 0
    for pattern in source.data_files or []:
        if "://" in pattern:
            continue
        matches = glob.glob(os.path.expanduser(pattern), recursive=True)
        if not matches:
            raise PrepareError(f"no data found: no file matches {pattern!r}")
        local_files += len(matches)
    kwargs = {}
    if source.dataset == "text":
        kwargs = dict(sample_by=source.text_unit, encoding_errors="replace")
    kwargs.update(split=source.split, cache_dir=source.cache_dir, streaming=source.streaming)
    if not source.streaming and min(num_proc, local_files) > 1:  # datasets warns when a job would get no file
        kwargs["num_proc"] = min(num_proc, local_files)
    try:
        if source.is_local:
            corpus = datasets.load_dataset(source.dataset, data_files=source.data_files, **kwargs)
        else:
            corpus = datasets.load_dataset(source.dataset, source.dataset_config, **kwargs)
        if source.streaming:
            return check_stream(corpus, source)
    except FileNotFoundError as error:
        raise PrepareError(f"no data found for {source.dataset} {source.data_files or ''}: {error}") from None
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error
        if type(cause).__name__ == "SchemaInferenceError":  # the builder found not a single record
            raise PrepareError(f"the corpus {source.data_files} holds no documents") from None
        raise PrepareError(f"cannot read {source.data_files}: {type(cause).__name__}: {cause}") from None
    if source.text_column not in corpus.column_names:
        raise PrepareError(f"no column {source.text_column!r} in the corpus; its columns are {corpus.column_names}")
    if source.max_documents is not None:
        corpus = corpus.select(range(min(source.max_documents, len(corpus))))
    corpus = corpus.select_columns([source.text_column])
    if len(corpus) == 0:
        raise PrepareError(f"the corpus {source.dataset} {source.data_files or ''} holds no documents")
    return corpus


def check_stream(stream: datasets.IterableDataset, source: CorpusSource) -> datasets.IterableDataset:
    """The stream's first record shows whether it has documents and the text column."""
    first = next(iter(stream), None)
    if first is None:
        raise PrepareError(f"the corpus {source.name} holds no documents")
    if source.text_column not in first:
        raise PrepareError(f"no column {source.text_column!r} in the corpus; its columns are {sorted(first)}")
    stream = stream.select_columns([source.text_column])
    return stream.take(source.max_documents) if source.max_documents is not None else stream

"""The source documents: a hub dataset or local text/json/parquet/csv files, cached by `datasets` or streamed.

A hub dataset's files come through `preparation.hub` (pinned, retried, verified); `datasets` then reads them as
local files, whichever the mode. Local plain-text files in cached mode are read where they lie
(`text_file_references`): the tokenizing map takes a small dataset of file references and splits each file into
documents as `datasets`' text builder would (`documents_of_file`), so the text never becomes an Arrow copy."""

import glob
import itertools
import os
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import datasets
import pyarrow as pa
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import Hasher

from formats.packed_data import LOCAL_BUILDERS
from preparation import PrepareError
from preparation.hub import HubDataset, RetryPolicy, download, stream_files


@dataclass(frozen=True)
class CorpusSource:
    dataset: str  # a hub id, or one of LOCAL_BUILDERS for local files
    dataset_config: str | None
    dataset_revision: str | None  # a hub dataset's branch, tag or commit; None: its main branch
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

    def description(self, hub: HubDataset | None = None) -> dict:
        """The metadata's `source`: what the documents are, not where this machine keeps them; a hub dataset's
        configuration as resolved and the commit its files came from."""
        keys = ("dataset", "split", "data_files", "text_column", "max_documents")
        keys += ("text_unit",) if self.dataset == "text" else ("dataset_config",) if not self.is_local else ()
        described = {key: getattr(self, key) for key in keys}
        if hub is not None:
            described.update(dataset_config=hub.config, dataset_revision=hub.commit,
                             files=[file.path for file in hub.files])
        return described


def load_corpus(source: CorpusSource, num_proc: int = 1, hub: HubDataset | None = None,
                retries: RetryPolicy | None = None) -> datasets.Dataset | datasets.IterableDataset:
    """The documents, as one text column; refuses missing files, missing columns and empty corpora.

    A cached corpus of several files is converted to Arrow by up to `num_proc` processes, files split
    between them in order (the documents' order is the same for any number). A hub dataset (`hub`, from
    `preparation.hub.locate`) is downloaded by `num_proc` threads first, or streamed a file at a time."""
    if source.is_local and not source.data_files:
        raise PrepareError(f"--dataset {source.dataset} needs --data_files")
    if not source.is_local and hub is None:
        raise ValueError("a hub dataset is located (preparation.hub.locate) before it is loaded")
    builder, data_files = (source.dataset, source.data_files) if hub is None else (hub.builder, None)
    if hub is not None and source.streaming:
        corpus = stream_files(hub, source.text_column, retries or RetryPolicy())
        return check_stream(corpus, source)
    if hub is not None:
        data_files = {source.split: download(hub, num_proc, retries or RetryPolicy())}
    local_files = count_local_files(data_files)
    kwargs = {}
    if builder == "text":
        kwargs = dict(sample_by=source.text_unit, encoding_errors="replace")
    kwargs.update(split=source.split, cache_dir=source.cache_dir, streaming=source.streaming)
    if not source.streaming and min(num_proc, local_files) > 1:  # datasets warns when a job would get no file
        kwargs["num_proc"] = min(num_proc, local_files)
    try:
        corpus = datasets.load_dataset(builder, data_files=data_files, **kwargs)
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


COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".7z", ".tar")  # the text builder extracts these


# Text a tokenizing call reads: files are bundled in order up to this size (a larger file is a bundle of its own).
# Several small files a call saved 12% of the map's time on source code (18 KB a file); on books (130 KB to 1 MB)
# one file a call kept peak memory lowest. Bundles of equal size also give `map`'s workers equal shares of the
# text, where equal numbers of files gave one worker 6% more of it.
BUNDLE_BYTES = 256 << 10


def text_file_references(source: CorpusSource) -> datasets.Dataset | None:
    """Local plain-text files as a dataset of references in the order `datasets` reads them, one row a bundle of
    files (`BUNDLE_BYTES`): their paths, sizes and modification times (so a changed file changes the dataset's
    fingerprint, and the tokenizing map runs again). None where the files cannot be read where they lie:
    compressed, or in streaming mode."""
    if source.dataset != "text" or source.streaming or not source.data_files:
        return None
    count_local_files(source.data_files)  # a pattern that matches nothing is refused as the builder path refuses it
    paths = resolved_files(source.data_files)
    if not paths or any(path.endswith(COMPRESSED) or "://" in path for path in paths):
        return None
    stats = [os.stat(path) for path in paths]
    bounds = bundle_bounds([s.st_size for s in stats], BUNDLE_BYTES)
    references = pa.table({
        column: [values[start:stop] for start, stop in itertools.pairwise(bounds)]
        for column, values in (("path", paths), ("size", [s.st_size for s in stats]),
                               ("mtime_ns", [s.st_mtime_ns for s in stats]))
    })
    # An Arrow file named by its content: the tokenizing map caches its output beside it (an in-memory dataset's
    # map would keep the whole tokenized corpus in memory), keyed by what the files are.
    folder = Path(source.cache_dir or datasets.config.HF_DATASETS_CACHE) / "text_file_references"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Hasher.hash(references.to_pydict())}.arrow"
    if not path.exists():
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        with ArrowWriter(path=str(staging)) as writer:
            writer.write_table(references)
            writer.finalize()
        staging.replace(path)
    return datasets.Dataset.from_file(str(path))


def bundle_bounds(sizes: list[int], bundle_bytes: int) -> list[int]:
    """Where each bundle of consecutive files starts, and the end: a file joins the bundle before it while the
    bundle stays within `bundle_bytes`."""
    bounds, held = [0], 0
    for index, size in enumerate(sizes):
        if index > bounds[-1] and held + size > bundle_bytes:
            bounds.append(index)
            held = 0
        held += size
    return [*bounds, len(sizes)]


def resolved_files(patterns: list[str]) -> list[str]:
    """The files the patterns name, in order, as `datasets` resolves them for a builder (hidden files and
    `__special__` folders left out unless a pattern names them). `DataFilesList.from_patterns` would return the
    same list, but first reads every file's metadata for a fingerprint that is not used here: 0.8 s of 1.2 s
    for 12,530 files."""
    base_path = Path().resolve().as_posix()
    paths = []
    for pattern in patterns:
        try:
            paths += datasets.data_files.resolve_pattern(pattern, base_path=base_path)
        except FileNotFoundError:  # as `from_patterns`: a wildcard may match nothing; the builder path refuses it
            if not glob.has_magic(pattern):
                raise
    return paths


def documents_of_file(path: str, text_unit: str) -> list[str]:
    """A file's documents exactly as `datasets`' text builder makes them (`sample_by`): UTF-8, undecodable bytes
    replaced, universal newlines; the whole file, its paragraphs (split at blank lines, empty ones dropped but a
    last non-empty one), or its lines (split at newlines, without them)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    if text_unit == "document":
        return [text]
    if text_unit == "paragraph":
        pieces = text.split("\n\n")
        return [piece for piece in pieces[:-1] if piece] + ([pieces[-1]] if pieces[-1] else [])
    return [line.rstrip("\n") for line in StringIO(text).readlines()]


def count_local_files(data_files: list[str] | dict[str, list[str]]) -> int:
    """How many local files the patterns match; refuses a pattern that matches none."""
    patterns = [p for group in data_files.values() for p in group] if isinstance(data_files, dict) else data_files
    count = 0
    for pattern in patterns:
        if "://" in pattern:
            continue
        matches = glob.glob(os.path.expanduser(pattern), recursive=True)
        if not matches:
            raise PrepareError(f"no data found: no file matches {pattern!r}")
        count += len(matches)
    return count


def check_stream(stream: datasets.IterableDataset, source: CorpusSource) -> datasets.IterableDataset:
    """The stream's first record shows whether it has documents and the text column."""
    first = next(iter(stream), None)
    if first is None:
        raise PrepareError(f"the corpus {source.name} holds no documents")
    if source.text_column not in first:
        raise PrepareError(f"no column {source.text_column!r} in the corpus; its columns are {sorted(first)}")
    stream = stream.select_columns([source.text_column])
    return stream.take(source.max_documents) if source.max_documents is not None else stream

"""Tokenize a text corpus into packed blocks of GPT-2 tokens, saved as an Arrow `DatasetDict`.

    python prepare_data.py --output_dir data/fineweb_edu_10B                # FineWeb-Edu sample-10BT, pinned
    python prepare_data.py --dataset text --data_files 'books/*.txt' --text_unit paragraph \
        --output_dir data/books                                              # your own text files

The pipeline, each step a `datasets` operation that keeps memory bounded (the steps live in `preparation/`):
1. load the corpus (hub dataset or local text/json/parquet files), cached or `--streaming`; a hub dataset is
   pinned to a commit, its disk needs checked, its files downloaded with retries and checked against their digests;
2. tokenize every document, each prefixed with <|endoftext|> (tiktoken whenever the tokenizer is GPT-2's BPE);
3. hold out whole documents until the validation split has `--val_tokens`;
4. pack each split's token stream into rows of `block_size + 1` tokens with stride `block_size`:
   inputs are `row[:-1]`, targets `row[1:]`, and every token is a target exactly once;
5. save splits, tokenizer and `prepare_metadata.json` (`formats.packed_data`) to a staging directory, then
   rename it into place.
"""

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from transformers import HfArgumentParser

from formats.packed_data import FINEWEB_EDU, read_metadata, saved_rows_sha256, write_metadata
from preparation import PrepareError, SourceUnavailable
from preparation.cached import prepare_cached
from preparation.corpus import CorpusSource, load_corpus, text_file_references
from preparation.hub import HubDataset, RetryPolicy, check_disk_space, locate
from preparation.output import directory_bytes, holds_this_preparation, staged
from preparation.splits import PreparedSplits
from preparation.streaming import prepare_streamed
from preparation.tokenizer import (
    DocumentTokenizer,
    FileTokenizer,
    document_tokenizer,
    end_of_text_id,
    tokenizer_from_source,
    train_bpe_tokenizer,
)
from training.exit_codes import ExitCode

PIPELINE_VERSION = 1


@dataclass
class PrepareArguments:
    output_dir: str = field(metadata={"help": "Where the DatasetDict (train, validation) is saved."})
    dataset: str = field(
        default=FINEWEB_EDU,
        metadata={"help": "A hub dataset id, or a datasets builder for local files: text, json, parquet."},
    )
    dataset_config: str | None = field(default="sample-10BT", metadata={"help": "Hub dataset configuration."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Hub dataset branch, tag or commit (default: the main branch's commit when "
                                "preparation starts; the commit is recorded in prepare_metadata.json)."}
    )
    split: str = field(default="train", metadata={"help": "Split of the source dataset to read."})
    data_files: list[str] | None = field(default=None, metadata={"help": "Files or globs for text/json/parquet."})
    text_column: str = field(default="text", metadata={"help": "Column that holds the documents."})
    text_unit: str = field(
        default="document",
        metadata={"help": "For plain-text files: one document per file, paragraph or line.",
                  "choices": ["document", "paragraph", "line"]},
    )
    tokenizer: str = field(
        default="openai-community/gpt2",
        metadata={"help": "Hub id, local tokenizer directory, or a .tiktoken ranks file (GPT-2's BPE)."},
    )
    train_tokenizer_vocab: int | None = field(
        default=None, metadata={"help": "Train a byte-level BPE of this size on the corpus instead of --tokenizer."}
    )
    block_size: int = field(default=1024, metadata={"help": "Tokens per training input."})
    val_tokens: int | None = field(
        default=None, metadata={"help": "Tokens held out for validation (default: 5%% of the corpus, at most 100M)."}
    )
    num_proc: int = field(default_factory=lambda: os.cpu_count() or 1, metadata={"help": "Worker processes."})
    seed: int = field(default=1337, metadata={"help": "Seed of the validation document choice."})
    max_documents: int | None = field(default=None, metadata={"help": "Use only the first N documents."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output directory holding other data."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache (default: HF_DATASETS_CACHE)."})
    download_retries: int = field(
        default=5, metadata={"help": "Attempts at each hub request that fails for a transient reason (429, 5xx, "
                             "timeouts, dropped connections) before the preparation stops."}
    )
    download_retry_wait: float = field(
        default=2.0, metadata={"help": "Seconds before the first retry; doubles each time up to 60, unless the hub "
                               "sends Retry-After."}
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream the source instead of caching it: disk holds only the packed output. "
                                 "Validation is then the stream's first documents."}
    )

    def corpus_source(self) -> CorpusSource:
        return CorpusSource(self.dataset, self.dataset_config, self.dataset_revision, self.split, self.data_files,
                            self.text_column, self.text_unit, self.max_documents, self.streaming, self.cache_dir)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.download_retries, first_wait=self.download_retry_wait)

    def to_metadata_key(self) -> dict:
        """What decides the output's content: equal keys mean the existing output is this one."""
        key = asdict(self)
        for irrelevant in ("output_dir", "num_proc", "overwrite", "cache_dir", "download_retries",
                           "download_retry_wait"):
            key.pop(irrelevant)
        return key


def prepare(args: PrepareArguments) -> dict:
    """Run the whole pipeline; returns the metadata written beside the data."""
    started = time.time()
    check_arguments(args)
    output = Path(args.output_dir)
    if holds_this_preparation(output, args.to_metadata_key(), args.overwrite):
        print(f"{output} already holds this preparation; nothing to do (--overwrite redoes it)")
        return read_metadata(output)

    source = args.corpus_source()
    hub = None if source.is_local else locate_on_hub(args, output)
    tokenizer = None if args.train_tokenizer_vocab else tokenizer_from_source(args.tokenizer)  # before the download
    # Plain-text files are tokenized where they lie, unless a tokenizer is first trained on their text.
    files = None if args.train_tokenizer_vocab else text_file_references(source)
    corpus = files if files is not None else load_corpus(source, args.num_proc, hub, args.retry_policy())
    if args.train_tokenizer_vocab:
        tokenizer = train_bpe_tokenizer(corpus, args.text_column, args.train_tokenizer_vocab)
    eot_id = end_of_text_id(tokenizer)  # before anything is written

    with staged(output) as staging:
        tokenize = document_tokenizer(tokenizer, eot_id, args.text_column, staging)
        if files is not None:
            tokenize = FileTokenizer(tokenize, args.text_unit)
        if args.streaming:
            splits = prepare_streamed(corpus, tokenize, staging, block_size=args.block_size,
                                      requested_val_tokens=args.val_tokens, num_proc=args.num_proc)
        else:
            splits = prepare_cached(corpus, tokenize, staging, block_size=args.block_size,
                                    requested_val_tokens=args.val_tokens, seed=args.seed, num_proc=args.num_proc,
                                    corpus_name=source.name, max_documents=args.max_documents,
                                    cache_key=[args.to_metadata_key(), len(tokenizer), PIPELINE_VERSION])
        metadata = preparation_metadata(args, source, hub, tokenizer, tokenize, splits)
        metadata["rows_sha256"] = saved_rows_sha256(staging)  # what the data is, wherever it is written again
        write_metadata(staging, metadata)

    elapsed = time.time() - started
    metadata["elapsed_seconds"] = elapsed
    print_summary(metadata, elapsed, directory_bytes(output), output)
    return metadata


def locate_on_hub(args: PrepareArguments, output: Path) -> HubDataset:
    """The hub dataset's files at one commit, and room on disk for what preparing them writes."""
    hub = locate(args.dataset, args.dataset_config, args.split, args.dataset_revision, args.data_files,
                 args.retry_policy())
    print(f"{hub.repo_id} ({hub.config}, {hub.split}) at commit {hub.commit}: {len(hub.files)} files, "
          f"{hub.total_bytes / 1e9:,.2f} GB")
    check_disk_space(hub, args.cache_dir, output, args.streaming)
    return hub


def check_arguments(args: PrepareArguments):
    if args.block_size < 1:
        raise PrepareError(f"--block_size must be positive, got {args.block_size}")
    if args.streaming and args.train_tokenizer_vocab:
        raise PrepareError("--train_tokenizer_vocab needs the whole corpus first; it does not combine with --streaming")


def preparation_metadata(args: PrepareArguments, source: CorpusSource, hub: HubDataset | None, tokenizer,
                         tokenize: DocumentTokenizer, splits: PreparedSplits) -> dict:
    return {
        "pipeline_version": PIPELINE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arguments": args.to_metadata_key(),
        "source": source.description(hub),
        "tokenizer": {"name_or_path": tokenizer.name_or_path, "vocab_size": len(tokenizer),
                      "eot_id": tokenize.eot_id, "backend": tokenize.backend},
        "block_size": args.block_size,
        "dtype": tokenize.dtype,
        "val_tokens_requested": splits.val_tokens,
        "splits": splits.statistics,
        "replacement_chars": splits.replacement_chars,
    }


def print_summary(metadata: dict, elapsed: float, disk_bytes: int, output: Path):
    total_tokens = sum(s.get("tokens", 0) for s in metadata["splits"].values())
    dropped = sum(s.get("dropped_tokens", 0) for s in metadata["splits"].values())
    lines = [f"Prepared {output}  ({metadata['tokenizer']['backend']} tokenizer, {metadata['dtype']}, "
             f"block {metadata['block_size']})"]
    for name, stats in metadata["splits"].items():
        lines.append(f"  {name:<10} {stats['documents']:>10,} documents {stats.get('tokens', 0):>14,} tokens "
                     f"{stats['rows']:>10,} rows")
    share = dropped / total_tokens if total_tokens else 0.0
    lines.append(f"  never a target (packing boundaries): {dropped:,} tokens ({share:.3%})")
    if metadata["replacement_chars"] and metadata["source"]["dataset"] == "text":  # the files the kit decoded
        lines.append(f"  undecodable bytes replaced by U+FFFD: {metadata['replacement_chars']:,}")
    lines.append(f"  {elapsed:.1f} s, {total_tokens / max(elapsed, 1e-9):,.0f} tokens/s, "
                 f"{disk_bytes / 2**20:,.1f} MiB on disk")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(PrepareArguments).parse_args_into_dataclasses(args=argv)
    try:
        prepare(args)
    except PrepareError as error:
        print(f"prepare_data.py: error: {error}", file=sys.stderr)
        return ExitCode.SOURCE_UNAVAILABLE if isinstance(error, SourceUnavailable) else ExitCode.BAD_SETTING
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())

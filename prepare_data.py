"""Tokenize a text corpus into packed blocks of GPT-2 tokens, saved as an Arrow `DatasetDict`.

    python prepare_data.py --output_dir data/fineweb_edu_10B                # FineWeb-Edu sample-10BT
    python prepare_data.py --dataset text --data_files '../shared/data/shakespeare/*.txt' \
        --tokenizer ../shared/data/gpt2.tiktoken --output_dir data/shakespeare

The pipeline, each step a `datasets` operation that keeps memory bounded:
1. load the corpus (hub dataset or local text/json/parquet files);
2. tokenize every document in `datasets.map(batched=True, num_proc=N)`, each prefixed with <|endoftext|>;
3. hold out whole documents, in a seeded random order, until the validation split has `--val_tokens`;
4. pack each split's token stream into rows of `block_size + 1` tokens with stride `block_size`:
   inputs are `row[:-1]`, targets `row[1:]`, and every token is a target exactly once;
5. save splits, tokenizer and `prepare_metadata.json` to a temporary directory, then rename it into place.
"""

import glob
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter
from datasets.utils import tqdm as datasets_tqdm  # tqdm that follows datasets' progress-bar switch
from tiktoken.load import load_tiktoken_bpe
from transformers import (
    AutoTokenizer,
    GPT2Tokenizer,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.convert_slow_tokenizer import TikTokenConverter, bytes_to_unicode

from training.packed_data import (
    FINEWEB_EDU,
    LOCAL_BUILDERS,
    METADATA_FILE,
    read_metadata,
    row_dtype,
    row_features,
    rows_table,
    tokenizer_dir,
    write_metadata,
)

PIPELINE_VERSION = 1
EOT = "<|endoftext|>"
# GPT-2's pre-tokenization regex as tiktoken writes it for r50k_base (equivalent to the original, faster).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# The reproduction's FineWeb-Edu validation shard held 100M tokens; small corpora hold out 5% instead.
MAX_DEFAULT_VAL_TOKENS = 100_000_000
DEFAULT_VAL_FRACTION = 0.05
# Documents packed together; a group leaves fewer than block_size tokens untargeted (0.1% of a FineWeb group).
PACK_GROUP_DOCUMENTS = 10_000
STREAM_BATCH_DOCUMENTS = 1000


class PrepareError(Exception):
    """A problem with the input: reported on one line, with nothing written."""


@dataclass
class PrepareArguments:
    output_dir: str = field(metadata={"help": "Where the DatasetDict (train, validation) is saved."})
    dataset: str = field(
        default=FINEWEB_EDU,
        metadata={"help": "A hub dataset id, or a datasets builder for local files: text, json, parquet."},
    )
    dataset_config: str | None = field(default="sample-10BT", metadata={"help": "Hub dataset configuration."})
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
    streaming: bool = field(
        default=False, metadata={"help": "Stream the source instead of caching it: disk holds only the packed output. "
                                 "Validation is then the stream's first documents."}
    )

    @property
    def is_local(self) -> bool:
        return self.dataset in LOCAL_BUILDERS

    def source_description(self) -> dict:
        keys = ("dataset", "split", "data_files", "text_column", "max_documents")
        keys += ("text_unit",) if self.dataset == "text" else ("dataset_config",) if not self.is_local else ()
        return {key: getattr(self, key) for key in keys}

    def to_metadata_key(self) -> dict:
        """What decides the output's content: equal keys mean the existing output is this one."""
        key = asdict(self)
        for irrelevant in ("output_dir", "num_proc", "overwrite", "cache_dir"):
            key.pop(irrelevant)
        return key


# ---- tokenizer --------------------------------------------------------------------------------------------


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A Hugging Face fast tokenizer from a hub id, a directory, or GPT-2's .tiktoken ranks file."""
    try:
        if source.endswith(".tiktoken"):
            vocab, merges = TikTokenConverter(vocab_file=source).extract_vocab_merges_from_model(source)
            vocab[EOT] = len(vocab)  # GPT-2: 50,256 ranked tokens, then <|endoftext|> = 50256
            return GPT2Tokenizer(vocab=vocab, merges=merges, name_or_path=source)
        return AutoTokenizer.from_pretrained(source)
    except Exception as error:  # any failure here means the same thing to the user
        raise PrepareError(f"cannot load tokenizer {source!r}: {type(error).__name__}: {error}") from None


def train_bpe_tokenizer(corpus: datasets.Dataset, text_column: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE learned from the corpus, with <|endoftext|> as its only special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = (batch[text_column] for batch in corpus.iter(batch_size=1000))
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(corpus))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   name_or_path=f"bpe-{vocab_size}")


def end_of_text_id(tokenizer: PreTrainedTokenizerBase) -> int:
    token_id = tokenizer.convert_tokens_to_ids(EOT) if EOT in tokenizer.get_vocab() else tokenizer.eos_token_id
    if token_id is None:
        raise PrepareError(f"tokenizer {tokenizer.name_or_path!r} has neither {EOT} nor an eos token")
    return token_id


def gpt2_mergeable_ranks(tokenizer: PreTrainedTokenizerBase) -> dict[bytes, int] | None:
    """The tokenizer's BPE as tiktoken ranks when it is GPT-2's byte-level BPE; else None.

    tiktoken encodes about twice as fast as `tokenizers` on one core, so the pipeline uses it when the
    tokenizer has GPT-2's pre-tokenizer, the 256 byte tokens at ids 0-255, and merges whose priority
    follows the id of the token they make, which is how tiktoken ranks merges. (OpenAI's own
    `tokenizer.json` and the one converted from `gpt2.tiktoken` both qualify; the tests check the ids.)
    """
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model, pre_tokenizer = state["model"], state.get("pre_tokenizer") or {}
    is_gpt2_pre_tokenizer = (pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex")
                             and not pre_tokenizer.get("add_prefix_space"))
    if model.get("type") != "BPE" or not is_gpt2_pre_tokenizer or state.get("normalizer"):
        return None
    char_to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    special = {token["content"] for token in state.get("added_tokens", [])}
    vocab = {token: token_id for token, token_id in model["vocab"].items() if token not in special}
    if any(char not in char_to_byte for token in vocab for char in token):
        return None
    ranks = {bytes(char_to_byte[char] for char in token): token_id for token, token_id in vocab.items()}
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    bytes_first = sorted(ranks.get(bytes([b]), -1) for b in range(256)) == list(range(256))
    merged_ids = [vocab.get(left + right, -1) for left, right in merges]
    merges_in_id_order = min(merged_ids, default=0) >= 256 and all(a <= b for a, b in itertools.pairwise(merged_ids))
    return ranks if bytes_first and merges_in_id_order else None


class DocumentTokenizer:
    """`datasets.map` function: a batch of documents -> one list<uint16|uint32> of ids per document.

    Pickled into each worker by its source and ids only; the encoder is built lazily in the worker.
    """

    def __init__(self, tokenizer_dir: str, text_column: str, eot_id: int, dtype: str, ranks: dict | None):
        self.tokenizer_dir, self.text_column, self.eot_id = tokenizer_dir, text_column, eot_id
        self.dtype, self.ranks = dtype, ranks
        self._encode = None

    def __getstate__(self):
        return {**self.__dict__, "_encode": None}

    def _build_encoder(self):
        if self.ranks is not None:
            import tiktoken

            encoding = tiktoken.Encoding("gpt2", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=self.ranks,
                                         special_tokens={})
            return encoding.encode_ordinary
        backend = AutoTokenizer.from_pretrained(self.tokenizer_dir).backend_tokenizer
        return lambda text: backend.encode(text, add_special_tokens=False).ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._encode is None:
            self._encode = self._build_encoder()
        texts = batch.column(self.text_column).to_pylist()
        encoded = [self._encode(text) for text in texts]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)) + 1  # + <|endoftext|>
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.empty(offsets[-1], dtype=self.dtype)
        is_eot = np.zeros(offsets[-1], dtype=bool)
        is_eot[offsets[:-1]] = True
        ids[is_eot] = self.eot_id
        ids[~is_eot] = np.fromiter(itertools.chain.from_iterable(encoded), dtype=self.dtype,
                                   count=int(offsets[-1]) - len(encoded))
        replacements = [text.count("\ufffd") for text in texts]  # undecodable bytes, replaced when read
        return pa.table({
            "input_ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "replacement_chars": pa.array(replacements, pa.int64()),
        })


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

    Groups are fixed by document, not by worker, so the output is the same for any `num_proc`. Rows
    never cross a group boundary; what a group leaves over (fewer than block_size tokens) is never a
    target, and is counted by the caller.
    """

    def __init__(self, documents: datasets.Dataset, doc_ids: np.ndarray, block_size: int, group_documents: int):
        self.documents, self.doc_ids = documents, doc_ids
        self.block_size, self.group_documents = block_size, group_documents

    def __call__(self, batch: dict) -> pa.Table:
        (group,) = batch["group"]
        ids = self.doc_ids[group * self.group_documents : (group + 1) * self.group_documents]
        stream = pc.list_flatten(self.documents.data.column("input_ids").take(pa.array(ids))).to_numpy()
        return rows_table(pack_stream(stream, self.block_size))

    @staticmethod
    def pack(documents, doc_ids, block_size: int, num_proc: int, name: str, fingerprint: str) -> datasets.Dataset:
        groups = math.ceil(len(doc_ids) / PACK_GROUP_DOCUMENTS)
        # Packing runs at memory speed: worker processes pay off only when each gets several groups.
        workers = max(1, min(num_proc, groups // 8))
        return datasets.Dataset.from_dict({"group": list(range(groups))}).map(
            BlockPacker(documents, doc_ids, block_size, PACK_GROUP_DOCUMENTS), batched=True, batch_size=1,
            num_proc=workers if workers > 1 else None, remove_columns=["group"], desc=f"Packing {name}",
            new_fingerprint=fingerprint,
        )


_worker_tokenizer: "DocumentTokenizer | None" = None


def _install_tokenizer(tokenize: "DocumentTokenizer"):
    """Pool initializer: each worker receives the tokenizer once and builds its encoder once."""
    global _worker_tokenizer
    _worker_tokenizer = tokenize


def _tokenize_in_worker(batch: pa.Table) -> pa.Table:
    return _worker_tokenizer(batch)


def tokenizer_pool(tokenize: "DocumentTokenizer", num_proc: int):
    # Not fork: a streaming source may run threads (HTTP, fsspec). A fork server imports this module once
    # and forks each worker from it; spawned workers would each import it, one after another.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context.Pool(num_proc, initializer=_install_tokenizer, initargs=(tokenize,))


class StreamedSplit:
    """Rows of one split packed from a document stream as it is tokenized (used with --streaming).

    Tokenization runs in a process pool over batches of documents, in order; rows are cut from the
    running token stream, so only the stream's last partial row is left untargeted. The validation
    split stops at the first document boundary past `token_budget`.
    """

    def __init__(self, documents, pool, text_column: str, block_size: int, dtype: str,
                 token_budget: int | None = None):
        self.documents, self.pool, self.text_column = documents, pool, text_column
        self.block_size, self.dtype, self.token_budget = block_size, dtype, token_budget
        self.counts = {"documents": 0, "tokens": 0, "replacement_chars": 0, "rows": 0}

    def _text_batches(self):
        for batch in self.documents.select_columns([self.text_column]).iter(batch_size=STREAM_BATCH_DOCUMENTS):
            yield pa.table(batch)

    def packed_batches(self):
        """(n, block_size + 1) arrays of rows, one per tokenized batch of documents."""
        carry = np.empty(0, dtype=self.dtype)
        for table in self.pool.imap(_tokenize_in_worker, self._text_batches()):
            lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
            if self.token_budget is not None:  # keep documents up to the first one that fills the budget
                needed = self.token_budget - self.counts["tokens"]
                table = table.slice(0, int(np.searchsorted(np.cumsum(lengths), needed)) + 1)
                lengths = lengths[: table.num_rows]
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


def streamed_dataset(split: StreamedSplit, features, path: Path, too_short: PrepareError) -> datasets.Dataset:
    """Writes the split's rows to one Arrow file as they are packed, a whole batch of rows at a time."""
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


def build_streamed_splits(args: PrepareArguments, stream, tokenizer, staging: Path) -> dict:
    """--streaming: validation is the stream's first documents (at least --val_tokens), training the rest."""
    tokenize = document_tokenizer(args, tokenizer, staging)
    dtype = tokenize.dtype
    val_tokens = args.val_tokens if args.val_tokens is not None else MAX_DEFAULT_VAL_TOKENS
    features = row_features(dtype, args.block_size)
    too_short = PrepareError(f"the stream ended before {val_tokens:,} validation tokens and one training row; "
                             "pass a smaller --val_tokens")
    scratch = staging / "stream_cache"  # each split's rows as they are packed, before save_to_disk
    scratch.mkdir()
    with tokenizer_pool(tokenize, args.num_proc) as pool:  # one pool for both splits: workers start once
        parts = {"validation": StreamedSplit(stream, pool, args.text_column, args.block_size, dtype, val_tokens)}
        built = {"validation": streamed_dataset(parts["validation"], features, scratch / "validation.arrow",
                                                too_short)}
        if parts["validation"].counts["tokens"] < val_tokens:
            raise too_short
        held_out = parts["validation"].counts["documents"]
        parts["train"] = StreamedSplit(stream.skip(held_out), pool, args.text_column, args.block_size, dtype)
        built["train"] = streamed_dataset(parts["train"], features, scratch / "train.arrow", too_short)
    datasets.DatasetDict(built).save_to_disk(str(staging))
    shutil.rmtree(scratch)
    split_stats = {
        name: {"documents": part.counts["documents"], "tokens": part.counts["tokens"], "rows": part.counts["rows"],
               "dropped_tokens": part.counts["tokens"] - part.counts["rows"] * args.block_size}
        for name, part in parts.items()
    }
    return save_metadata(args, staging, tokenizer, tokenize, val_tokens, split_stats,
                          sum(part.counts["replacement_chars"] for part in parts.values()))


# ---- corpus -----------------------------------------------------------------------------------------------


def load_corpus(args: PrepareArguments) -> datasets.Dataset:
    if args.is_local and not args.data_files:
        raise PrepareError(f"--dataset {args.dataset} needs --data_files")
    for pattern in args.data_files or []:
        if "://" not in pattern and not glob.glob(os.path.expanduser(pattern), recursive=True):
            raise PrepareError(f"no data found: no file matches {pattern!r}")
    kwargs = {}
    if args.dataset == "text":
        kwargs = dict(sample_by=args.text_unit, encoding_errors="replace")
    kwargs.update(split=args.split, cache_dir=args.cache_dir, streaming=args.streaming)
    try:
        if args.is_local:
            corpus = datasets.load_dataset(args.dataset, data_files=args.data_files, **kwargs)
        else:
            corpus = datasets.load_dataset(args.dataset, args.dataset_config, **kwargs)
        if args.streaming:
            return check_stream(corpus, args)
    except FileNotFoundError as error:
        raise PrepareError(f"no data found for {args.dataset} {args.data_files or ''}: {error}") from None
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error
        if type(cause).__name__ == "SchemaInferenceError":  # the builder found not a single record
            raise PrepareError(f"the corpus {args.data_files} holds no documents") from None
        raise PrepareError(f"cannot read {args.data_files}: {type(cause).__name__}: {cause}") from None
    if args.text_column not in corpus.column_names:
        raise PrepareError(f"no column {args.text_column!r} in the corpus; its columns are {corpus.column_names}")
    if args.max_documents is not None:
        corpus = corpus.select(range(min(args.max_documents, len(corpus))))
    corpus = corpus.select_columns([args.text_column])
    if len(corpus) == 0:
        raise PrepareError(f"the corpus {args.dataset} {args.data_files or ''} holds no documents")
    return corpus


def check_stream(stream: datasets.IterableDataset, args: PrepareArguments) -> datasets.IterableDataset:
    """The stream's first record shows whether it has documents and the text column."""
    first = next(iter(stream), None)
    if first is None:
        raise PrepareError(f"the corpus {args.data_files or args.dataset} holds no documents")
    if args.text_column not in first:
        raise PrepareError(f"no column {args.text_column!r} in the corpus; its columns are {sorted(first)}")
    stream = stream.select_columns([args.text_column])
    return stream.take(args.max_documents) if args.max_documents is not None else stream


def default_val_tokens(total_tokens: int, block_size: int) -> int:
    proportional = math.ceil(total_tokens * DEFAULT_VAL_FRACTION)
    return min(MAX_DEFAULT_VAL_TOKENS, max(proportional, 4 * block_size))


def choose_validation_documents(doc_tokens: np.ndarray, val_tokens: int, seed: int) -> np.ndarray:
    """Indices of whole documents, in a seeded random order, until they hold at least `val_tokens` tokens."""
    order = np.random.default_rng(seed).permutation(len(doc_tokens))
    enough = np.searchsorted(np.cumsum(doc_tokens[order]), val_tokens) + 1
    return np.sort(order[:enough])


def split_documents(tokenized: datasets.Dataset, args: PrepareArguments):
    """Train and validation by whole documents: each split's document ids, their document and token counts, and
    the validation size asked for."""
    doc_tokens = pc.list_value_length(tokenized.data.column("input_ids")).to_numpy(zero_copy_only=False)
    total = int(doc_tokens.sum())
    if total == len(doc_tokens):  # nothing but the <|endoftext|> each document starts with
        raise PrepareError(f"the corpus {args.data_files or args.dataset} holds no text, only empty documents")
    val_tokens = args.val_tokens if args.val_tokens is not None else default_val_tokens(total, args.block_size)
    if len(doc_tokens) < 2:  # validation is carved from the packed rows instead
        return {"train": np.arange(1)}, {"train": {"documents": 1, "tokens": total}}, val_tokens
    val_docs = choose_validation_documents(doc_tokens, val_tokens, args.seed)
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


def carve_validation_rows(packed: datasets.Dataset, val_tokens: int, block_size: int) -> datasets.DatasetDict:
    """A single-document corpus: the last rows of its stream become validation."""
    val_rows = math.ceil(val_tokens / block_size)
    if val_rows >= len(packed):
        raise PrepareError(f"--val_tokens {val_tokens} needs {val_rows} rows; the corpus packs into {len(packed)}")
    return datasets.DatasetDict({
        "train": packed.select(range(len(packed) - val_rows)),
        "validation": packed.select(range(len(packed) - val_rows, len(packed))),
    })


# ---- output -----------------------------------------------------------------------------------------------


def check_output_dir(args: PrepareArguments) -> bool:
    """True when the output already holds exactly this preparation; raises when it holds something else."""
    output = Path(args.output_dir)
    if not output.exists() or not any(output.iterdir()):
        return False
    metadata_path = output / METADATA_FILE
    if metadata_path.exists():
        existing = json.loads(metadata_path.read_text())
        if existing.get("arguments") == args.to_metadata_key() and not args.overwrite:
            return True
    if not args.overwrite:
        raise PrepareError(f"{output} already holds other data; pass --overwrite to replace it")
    return False


def replace_directory(staging: Path, output: Path):
    """Rename `staging` to `output`; an existing `output` is moved aside first and removed only afterwards."""
    retired = output.with_name(output.name + ".old")
    if output.exists():
        shutil.rmtree(retired, ignore_errors=True)
        output.rename(retired)
    staging.rename(output)
    shutil.rmtree(retired, ignore_errors=True)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prepare(args: PrepareArguments) -> dict:
    """Run the whole pipeline; returns the metadata written beside the data."""
    started = time.time()
    if args.block_size < 1:
        raise PrepareError(f"--block_size must be positive, got {args.block_size}")
    if check_output_dir(args):
        print(f"{args.output_dir} already holds this preparation; nothing to do (--overwrite redoes it)")
        return read_metadata(args.output_dir)

    if args.streaming and args.train_tokenizer_vocab:
        raise PrepareError("--train_tokenizer_vocab needs the whole corpus first; it does not combine with --streaming")
    corpus = load_corpus(args)
    if args.train_tokenizer_vocab:
        tokenizer = train_bpe_tokenizer(corpus, args.text_column, args.train_tokenizer_vocab)
    else:
        tokenizer = load_tokenizer(args.tokenizer)
    end_of_text_id(tokenizer)  # fails early, before anything is written

    output = Path(args.output_dir)
    staging = output.with_name(output.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build = build_streamed_splits if args.streaming else build_splits
        metadata = build(args, corpus, tokenizer, staging)
    except BaseException:  # an error or Ctrl-C: nothing half-written stays behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, output)

    elapsed = time.time() - started
    metadata["elapsed_seconds"] = elapsed
    print_summary(metadata, elapsed, directory_bytes(output), output)
    return metadata


def build_splits(args: PrepareArguments, corpus: datasets.Dataset, tokenizer, staging: Path) -> dict:
    """Tokenize, split, pack and save into `staging`, with the tokenizer and the metadata; returns the metadata."""
    tokenize = document_tokenizer(args, tokenizer, staging)
    vocab_size = len(tokenizer)
    num_proc = max(1, min(args.num_proc, len(corpus)))
    tokenized = corpus.with_format("arrow").map(
        tokenize, batched=True, batch_size=1000, num_proc=num_proc, remove_columns=[args.text_column],
        desc="Tokenizing", new_fingerprint=_fingerprint(corpus, args, "tokenize", vocab_size),
    )
    replacement_chars = int(pc.sum(tokenized.data.column("replacement_chars")).as_py() or 0)
    tokenized = tokenized.remove_columns("replacement_chars")
    splits, counts, val_tokens = split_documents(tokenized, args)

    packed = datasets.DatasetDict({
        name: BlockPacker.pack(tokenized, doc_ids, args.block_size, num_proc, name,
                               _fingerprint(tokenized, args, f"pack-{name}", vocab_size))
        for name, doc_ids in splits.items()
    })
    if "validation" not in packed:  # one document: its stream was cut in two
        packed = carve_validation_rows(packed["train"], val_tokens, args.block_size)
        train_tokens = len(packed["train"]) * args.block_size + 1  # + the stream's first token, never a target
        counts["validation"] = {"documents": 0, "tokens": counts["train"]["tokens"] - train_tokens}
        counts["train"]["tokens"] = train_tokens
    if len(packed["train"]) == 0:
        raise PrepareError(f"the corpus is too small for one training row of {args.block_size + 1} tokens")
    split_stats = {
        name: {**counts[name], "rows": len(packed[name]),
               "dropped_tokens": counts[name]["tokens"] - len(packed[name]) * args.block_size}
        for name in ("train", "validation")
    }

    packed.save_to_disk(str(staging), num_proc=None)
    return save_metadata(args, staging, tokenizer, tokenize, val_tokens, split_stats, replacement_chars)


def document_tokenizer(args: PrepareArguments, tokenizer, staging: Path) -> DocumentTokenizer:
    """Save the tokenizer into the output and build the map function that encodes documents with it."""
    tokenizer.save_pretrained(tokenizer_dir(staging))
    dtype = row_dtype(len(tokenizer))
    is_ranks_file = args.tokenizer.endswith(".tiktoken") and not args.train_tokenizer_vocab
    ranks = load_tiktoken_bpe(args.tokenizer) if is_ranks_file else gpt2_mergeable_ranks(tokenizer)
    return DocumentTokenizer(str(tokenizer_dir(staging)), args.text_column, end_of_text_id(tokenizer), dtype,
                             ranks)


def save_metadata(args, staging: Path, tokenizer, tokenize: DocumentTokenizer, val_tokens: int,
                  split_stats: dict, replacement_chars: int) -> dict:
    metadata = {
        "pipeline_version": PIPELINE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arguments": args.to_metadata_key(),
        "source": args.source_description(),
        "tokenizer": {"name_or_path": tokenizer.name_or_path, "vocab_size": len(tokenizer),
                      "eot_id": tokenize.eot_id, "backend": "tiktoken" if tokenize.ranks else "tokenizers"},
        "block_size": args.block_size,
        "dtype": tokenize.dtype,
        "val_tokens_requested": val_tokens,
        "splits": split_stats,
        "replacement_chars": replacement_chars,
    }
    write_metadata(staging, metadata)
    return metadata


def _fingerprint(dataset: datasets.Dataset, args: PrepareArguments, step: str, vocab_size: int) -> str:
    """Cache key for a map step: the input's fingerprint and every argument that changes the output."""
    from datasets.fingerprint import Hasher

    return Hasher.hash([dataset._fingerprint, step, args.to_metadata_key(), vocab_size, PIPELINE_VERSION])


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
    if metadata["replacement_chars"]:
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
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

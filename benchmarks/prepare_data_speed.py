"""End-to-end speed of prepare_data.py against the reproduction's data pipeline, side by side in one run.

    python benchmarks/prepare_data_speed.py --data_dir ../shared/data --num_proc 2 --copies 3

Corpus: the Shakespeare and Milton texts, one document per paragraph, repeated `--copies` times
(3 copies: about 5.4M GPT-2 tokens). Both pipelines start from the text files, use the same number of
processes, and end with uint16 tokens on disk:
- baseline: what the reproduction did: tiktoken `encode_ordinary` in a `multiprocessing.Pool`,
  each document prefixed with <|endoftext|>, written as uint16 numpy shards;
- ours: `prepare_data.prepare(...)` (load the text builder, tokenize, split, pack, save, and convert the
  ranks file into a Hugging Face tokenizer), in a fresh datasets cache so nothing is reused;
- ours with `--streaming`: the same, reading the files as a stream (no Arrow cache of the source or of
  the per-document tokens; packing as the tokens arrive).
Both are timed in this process from the first file read to the last byte written; imports excluded.
Each is run `--repeats` times, alternating; medians are reported.
"""

import argparse
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from preparation.tokenizer import GPT2_SPLIT_PATTERN
from prepare_data import PrepareArguments, prepare

REPO_ROOT = Path(__file__).resolve().parent.parent

SHARD_TOKENS = 10_000_000
# Held out by both of our modes: about the cached mode's default 5% of three copies (streaming has no default
# that fits a small corpus, since it cannot know the corpus size in advance).
VAL_TOKENS = 250_000
_encoding = None


def build_corpus(data_dir: Path, copies: int, target: Path) -> list[Path]:
    sources = sorted((data_dir / "shakespeare").glob("*.txt")) + sorted((data_dir / "milton").glob("*.txt"))
    files = []
    for copy in range(copies):
        for source in sources:
            files.append(target / f"{copy}_{source.name}")
            shutil.copyfile(source, files[-1])
    return files


def _init_worker(ranks_path: str):
    global _encoding
    _encoding = tiktoken.Encoding("gpt2", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=load_tiktoken_bpe(ranks_path),
                                  special_tokens={"<|endoftext|>": 50256})


def _tokenize(document: str) -> np.ndarray:
    tokens = [50256]
    tokens.extend(_encoding.encode_ordinary(document))
    return np.array(tokens, dtype=np.uint16)


def run_baseline(files: list[Path], ranks_path: str, num_proc: int, out_dir: Path) -> int:
    """The reproduction's fineweb.py, reading paragraphs the way datasets' text builder does."""
    def documents():
        for path in files:
            for paragraph in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                if paragraph:  # as datasets' text builder: empty strings only are skipped
                    yield paragraph

    total, shard_index, buffer, filled = 0, 0, np.empty(SHARD_TOKENS, dtype=np.uint16), 0
    # A fork server, not fork: forking a process that has threads (this one may: tokenizers, torch, a test
    # runner's) can copy a lock held by one of them into a worker, which then never finishes.
    with mp.get_context("forkserver").Pool(num_proc, initializer=_init_worker, initargs=(ranks_path,)) as pool:
        for tokens in pool.imap(_tokenize, documents(), chunksize=16):
            total += len(tokens)
            while len(tokens):
                take = min(len(tokens), SHARD_TOKENS - filled)
                buffer[filled : filled + take] = tokens[:take]
                filled, tokens = filled + take, tokens[take:]
                if filled == SHARD_TOKENS:
                    np.save(out_dir / f"shard_{shard_index:06d}.npy", buffer)
                    shard_index, filled = shard_index + 1, 0
    np.save(out_dir / f"shard_{shard_index:06d}.npy", buffer[:filled])
    return total


def run_ours(files: list[Path], ranks_path: str, num_proc: int, out_dir: Path, cache: Path, streaming: bool) -> int:
    """prepare_data.prepare with an empty datasets cache, so that nothing is reused."""
    args = PrepareArguments(output_dir=str(out_dir), dataset="text", text_unit="paragraph",
                            data_files=[str(f) for f in files], tokenizer=ranks_path, num_proc=num_proc,
                            cache_dir=str(cache), streaming=streaming, val_tokens=VAL_TOKENS)
    metadata = prepare(args)
    return sum(split["tokens"] for split in metadata["splits"].values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--num_proc", type=int, default=2)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ranks_path = str(args.data_dir / "gpt2.tiktoken")

    pipelines = {
        "baseline (tiktoken + multiprocessing.Pool + numpy shards)": lambda out, cache: run_baseline(
            files, ranks_path, args.num_proc, out),
        "prepare_data.py (datasets.map, tokenize + pack + save)": lambda out, cache: run_ours(
            files, ranks_path, args.num_proc, out / "data", cache, streaming=False),
        "prepare_data.py --streaming": lambda out, cache: run_ours(
            files, ranks_path, args.num_proc, out / "data", cache, streaming=True),
    }
    speeds, tokens = {name: [] for name in pipelines}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "corpus").mkdir()
        files = build_corpus(args.data_dir, args.copies, tmp / "corpus")
        for repeat in range(args.repeats):
            for index, (name, run) in enumerate(pipelines.items()):
                out, cache = tmp / f"out_{repeat}_{index}", tmp / f"cache_{repeat}_{index}"
                out.mkdir()
                started = time.perf_counter()
                tokens[name] = run(out, cache)
                speeds[name].append(tokens[name] / (time.perf_counter() - started))
                shutil.rmtree(out)
                shutil.rmtree(cache, ignore_errors=True)
    if len(set(tokens.values())) != 1:
        raise SystemExit(f"token counts differ: {tokens}")
    (corpus_tokens,) = set(tokens.values())
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    baseline = next(iter(medians.values()))
    print(f"corpus: {corpus_tokens:,} tokens, {len(files)} files, num_proc={args.num_proc}, "
          f"{args.repeats} repeats (median; tokenizer conversion included in ours)")
    for name, speed in medians.items():
        print(f"{name:<58} {speed:>12,.0f} tokens/s  ratio to baseline {speed / baseline:.2f}")


if __name__ == "__main__":
    main()

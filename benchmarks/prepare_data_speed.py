"""End-to-end speed and memory of prepare_data.py against the reproduction's data pipeline, at scale.

    python benchmarks/prepare_data_speed.py --data_dir DATA --tokens 10M,30M,100M --output prep.json  # ~25 min
    python benchmarks/prepare_data_speed.py --data_dir DATA --tokens 2M --shapes paragraphs  # a smoke run, seconds

DATA holds `gpt2.tiktoken` (GPT-2's BPE ranks: OpenAI's `r50k_base.tiktoken`) and, for the two prose shapes,
plain-text books as `shakespeare/*.txt` and `milton/*.txt`.

Three corpus shapes bracket FineWeb-Edu's documents (about 1,000 GPT-2 tokens each):
- `paragraphs`: the Shakespeare and Milton texts, one document per paragraph (about 50 tokens);
- `pages`: the same texts cut into 4,000-character documents (about 1,000 tokens, a web page);
- `files`: Python's standard library, one document per source file (about 8,500 tokens).
Each corpus is those texts copied until it holds about `--tokens` GPT-2 tokens, written as local files.

Four pipelines run on it, each as its own command, with `--num_proc` processes:
- `baseline`, the reproduction's shape: documents read in the parent, tiktoken `encode_ordinary` in a
  `multiprocessing.Pool` (`imap`, chunks of 16), each prefixed with <|endoftext|>, uint16 `.npy` shards;
- `cached`: `prepare_data.py` with an empty datasets cache;
- `streaming`: `prepare_data.py --streaming`;
- `tokenizer_only`: tiktoken's `encode_ordinary` alone on the same documents, already in memory, split across
  the processes: the encoding's own rate, with no reading or writing.
For each: wall time from the command to its finished output, tokens/s, peak resident memory of the whole
process tree (sampled every 50 ms in a second run, since sampling slows a command; all of it, and its
proportional anonymous part: no pages of memory-mapped files, and pages shared after a fork counted once),
and bytes on disk (output, and the datasets cache it leaves). Between
sizes of one shape, the marginal rate (extra tokens over extra seconds) leaves fixed costs out.
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's split pattern, as the reproduction got it

from benchmarks.command_cost import measured
from preparation.output import directory_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent

SHAPES = ("paragraphs", "pages", "files")
PIPELINES = ("baseline", "cached", "streaming", "tokenizer_only")
TEXT_UNIT = {"paragraphs": "paragraph", "pages": "paragraph", "files": "document"}
PAGE_CHARS = 4000
SHARD_TOKENS = 10_000_000
EOT_ID = 50256
_encoding = None


# ---- the corpora ---------------------------------------------------------------------------------------------

def source_texts(shape: str, data_dir: Path) -> list[tuple[str, str]]:
    """(name, contents) of one copy of the shape's texts, each written as one file of the corpus."""
    if shape == "files":
        import sysconfig

        stdlib = Path(sysconfig.get_paths()["stdlib"])
        paths = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
        return [(str(p.relative_to(stdlib)).replace("/", "_"), p.read_text(encoding="utf-8", errors="replace"))
                for p in paths]
    paths = sorted((data_dir / "shakespeare").glob("*.txt")) + sorted((data_dir / "milton").glob("*.txt"))
    texts = [(p.name, p.read_text(encoding="utf-8", errors="replace")) for p in paths]
    if shape == "paragraphs":
        return texts
    joined = "\n".join(t.replace("\n\n", "\n") for _, t in texts)  # pages: no paragraph breaks inside a page
    pages = [joined[i : i + PAGE_CHARS].strip("\n") for i in range(0, len(joined), PAGE_CHARS)]
    per_file = 256
    return [(f"pages_{i:04d}.txt", "\n\n".join(pages[i : i + per_file])) for i in range(0, len(pages), per_file)]


def argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, in one line: an unknown shape or pipeline, or a `--data_dir` that
    lacks what the shapes read; None when nothing is."""
    shapes = args.shapes.split(",")
    for flag, names, known in (("--shapes", shapes, SHAPES), ("--pipelines", args.pipelines.split(","), PIPELINES)):
        if unknown := [name for name in names if name not in known]:
            return f"{flag} {','.join(unknown)}: not one of {', '.join(known)}"
    if args.data_dir is None:
        return "--data_dir is required: the folder with gpt2.tiktoken and the books (see --help)"
    if not (args.data_dir / "gpt2.tiktoken").is_file():
        return f"--data_dir {args.data_dir}: no gpt2.tiktoken there (GPT-2's BPE ranks, OpenAI's r50k_base.tiktoken)"
    books = [p for folder in ("shakespeare", "milton") for p in (args.data_dir / folder).glob("*.txt")]
    if not books and {"paragraphs", "pages"} & set(shapes):
        return (f"--data_dir {args.data_dir}: no books in shakespeare/*.txt or milton/*.txt, which the paragraphs "
                f"and pages shapes read")
    return None


def build_corpus(texts: list[tuple[str, str]], tokens: int, target: Path, bytes_per_token: float) -> Path:
    """Copies of `texts` (`source_texts`), flat in `target`, until they hold about `tokens` tokens."""
    target.mkdir(parents=True)
    copy_bytes = sum(len(t.encode()) for _, t in texts)
    copies = max(1, round(tokens * bytes_per_token / copy_bytes))
    for copy in range(copies):
        for name, text in texts:
            (target / f"{copy:03d}_{name}").write_text(text, encoding="utf-8")
    return target


def bytes_per_token(texts: list[tuple[str, str]], encoding) -> float:
    sample = [text for _, text in texts[:400]]
    return sum(len(t.encode()) for t in sample) / sum(len(encoding.encode_ordinary(t)) for t in sample)


def corpus_documents(corpus: Path, text_unit: str):
    """The documents as datasets' text builder reads them: a file each, or its non-empty paragraphs."""
    for path in sorted(corpus.iterdir()):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text_unit == "document":
            yield text
        else:
            yield from (paragraph for paragraph in text.split("\n\n") if paragraph)


# ---- the two reference pipelines, run as commands by `--run` -----------------------------------------------

def gpt2_encoding(ranks_path: str):
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(ranks_path),
                             special_tokens={})


def _init_worker(ranks_path: str):
    global _encoding
    _encoding = gpt2_encoding(ranks_path)


def _tokenize(document: str) -> np.ndarray:
    tokens = [EOT_ID]
    tokens.extend(_encoding.encode_ordinary(document))
    return np.array(tokens, dtype=np.uint16)


def run_baseline(corpus: Path, text_unit: str, ranks_path: str, num_proc: int, out_dir: Path) -> int:
    """The reproduction's fineweb.py: documents read here, tokenized by a Pool, written as uint16 shards."""
    out_dir.mkdir(parents=True)
    total, shard_index, buffer, filled = 0, 0, np.empty(SHARD_TOKENS, dtype=np.uint16), 0
    with mp.get_context("forkserver").Pool(num_proc, initializer=_init_worker, initargs=(ranks_path,)) as pool:
        for tokens in pool.imap(_tokenize, corpus_documents(corpus, text_unit), chunksize=16):
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


def _encode_share(args) -> tuple[int, float]:
    """One process's share of the documents, read first, then timed through the encoder alone."""
    corpus, text_unit, ranks_path, index, parts = args
    encoding = gpt2_encoding(ranks_path)
    documents = [d for i, d in enumerate(corpus_documents(Path(corpus), text_unit)) if i % parts == index]
    started = time.perf_counter()
    tokens = sum(1 + len(encoding.encode_ordinary(d)) for d in documents)
    return tokens, time.perf_counter() - started


def run_tokenizer_only(corpus: Path, text_unit: str, ranks_path: str, num_proc: int) -> tuple[int, float]:
    """Tokens, and the seconds the slowest process spent encoding (no reading, no writing)."""
    with mp.get_context("forkserver").Pool(num_proc) as pool:
        shares = pool.map(_encode_share, [(str(corpus), text_unit, ranks_path, i, num_proc) for i in range(num_proc)])
    return sum(t for t, _ in shares), max(s for _, s in shares)


def run_pipeline(pipeline: str, corpus: Path, shape: str, args, work: Path) -> dict:
    out, cache = work / "out", work / "cache"
    text_unit, ranks = TEXT_UNIT[shape], str(args.data_dir / "gpt2.tiktoken")
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if pipeline in ("cached", "streaming"):
        command = [sys.executable, "prepare_data.py", "--dataset", "text", "--data_files", f"{corpus}/*",
                   "--text_unit", text_unit, "--tokenizer", ranks, "--num_proc", str(args.num_proc),
                   "--cache_dir", str(cache), "--output_dir", str(out), "--val_tokens", str(args.val_tokens)]
        command += ["--streaming"] if pipeline == "streaming" else []
    else:
        command = [sys.executable, __file__, "--run", pipeline, "--corpus", str(corpus), "--text_unit", text_unit,
                   "--ranks", ranks, "--num_proc", str(args.num_proc), "--out", str(out)]
    memory = measured(command, env, cwd=REPO_ROOT)  # this checkout's prepare_data.py
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    result = measured(command, env, cwd=REPO_ROOT, sample_memory=False)  # timed unobserved (see `measured`)
    if pipeline in ("cached", "streaming"):
        from formats.packed_data import read_metadata  # here: the timed commands do not import torch

        metadata = read_metadata(out)
        tokens = sum(split["tokens"] for split in metadata["splits"].values())
        seconds, rows_sha256 = result["seconds"], metadata["rows_sha256"]  # what the data is, to compare versions
    else:
        reported = json.loads(result["stdout"].strip().splitlines()[-1])
        tokens, rows_sha256 = reported["tokens"], None
        seconds = reported.get("encode_seconds", result["seconds"])
    record = {"pipeline": pipeline, "shape": shape, "tokens": tokens, "seconds": seconds,
              "wall_seconds": result["seconds"], "tokens_per_second": tokens / seconds,
              "peak_rss_bytes": memory["peak_rss_bytes"], "peak_anonymous_bytes": memory["peak_anonymous_bytes"],
              "output_bytes": directory_bytes(out), "cache_bytes": directory_bytes(cache), "rows_sha256": rows_sha256}
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return record


def parse_tokens(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}
    return int(float(text[:-1]) * scale[text[-1].upper()]) if text[-1].upper() in scale else int(text)


def marginal_rates(records: list[dict]) -> None:
    """Per shape and pipeline, extra tokens over extra seconds from each size to the next."""
    by_key = {}
    for record in records:
        by_key.setdefault((record["shape"], record["pipeline"]), []).append(record)
    for runs in by_key.values():
        runs.sort(key=lambda r: r["tokens"])
        for smaller, larger in zip(runs, runs[1:], strict=False):
            extra = larger["seconds"] - smaller["seconds"]
            larger["marginal_tokens_per_second"] = (larger["tokens"] - smaller["tokens"]) / extra if extra > 0 else None


def print_table(records: list[dict]) -> None:
    print("| shape | pipeline | tokens | wall s | tokens/s | marginal tokens/s | vs baseline | vs tokenizer only "
          "| peak RSS GB (anonymous) | output MB | cache MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for record in records:
        same = [r for r in records if r["shape"] == record["shape"] and r["tokens"] == record["tokens"]]
        rates = {r["pipeline"]: r["tokens_per_second"] for r in same}
        marginal = record.get("marginal_tokens_per_second")
        ratios = [f"{record['tokens_per_second'] / rates[other]:.2f}" if other in rates else "-"
                  for other in ("baseline", "tokenizer_only")]  # "-": that pipeline did not run
        print(f"| {record['shape']} | {record['pipeline']} | {record['tokens']:,} | {record['wall_seconds']:.1f} "
              f"| {record['tokens_per_second']:,.0f} | {f'{marginal:,.0f}' if marginal else '-'} "
              f"| {ratios[0]} | {ratios[1]} "
              f"| {record['peak_rss_bytes'] / 1e9:.2f} ({record['peak_anonymous_bytes'] / 1e9:.2f}) "
              f"| {record['output_bytes'] / 1e6:,.0f} "
              f"| {record['cache_bytes'] / 1e6:,.0f} |")


def run_command(args) -> None:
    """`--run baseline|tokenizer_only`: one reference pipeline, its token count printed as JSON."""
    if args.run == "baseline":
        print(json.dumps({"tokens": run_baseline(args.corpus, args.text_unit, args.ranks, args.num_proc, args.out)}))
    else:
        tokens, seconds = run_tokenizer_only(args.corpus, args.text_unit, args.ranks, args.num_proc)
        print(json.dumps({"tokens": tokens, "encode_seconds": seconds}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, help="gpt2.tiktoken and the books (see above); required.")
    parser.add_argument("--tokens", default="10M,30M,100M", help="Corpus sizes in GPT-2 tokens, e.g. 10M,30M,100M.")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--num_proc", type=int, default=2)
    parser.add_argument("--val_tokens", type=int, default=250_000, help="Held out by both of our modes.")
    parser.add_argument("--output", type=Path, default=None, help="Write the records as JSON here.")
    parser.add_argument("--run", choices=("baseline", "tokenizer_only"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--text_unit", help=argparse.SUPPRESS)
    parser.add_argument("--ranks", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        return run_command(args)

    if problem := argument_problem(args):
        parser.error(problem)
    encoding = gpt2_encoding(str(args.data_dir / "gpt2.tiktoken"))
    sizes = sorted(parse_tokens(t) for t in args.tokens.split(","))
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            texts = source_texts(shape, args.data_dir)
            per_token = bytes_per_token(texts, encoding)
            for size in sizes:
                corpus = build_corpus(texts, size, Path(tmp) / f"{shape}_{size}", per_token)
                for pipeline in args.pipelines.split(","):
                    record = run_pipeline(pipeline, corpus, shape, args, Path(tmp) / "work")
                    records.append({**record, "corpus": f"{shape}_{size}"})
                    print(f"{shape} {record['tokens']:,} tokens {pipeline}: {record['wall_seconds']:.1f} s, "
                          f"{record['tokens_per_second']:,.0f} tokens/s, "
                          f"peak {record['peak_rss_bytes'] / 1e9:.2f} GB "
                          f"({record['peak_anonymous_bytes'] / 1e9:.2f} anonymous)", flush=True)
                shutil.rmtree(corpus)
    marginal_rates(records)
    for corpus in {r["corpus"] for r in records}:
        counts = {r["pipeline"]: r["tokens"] for r in records if r["corpus"] == corpus}
        if len(set(counts.values())) != 1:
            raise SystemExit(f"token counts differ between pipelines on corpus {corpus}: {counts}")
    print_table(records)
    if args.output:
        args.output.write_text(json.dumps({"num_proc": args.num_proc, "records": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Does `--num_proc` speed up a hub dataset's download and Arrow conversion? Seconds from nothing cached to a
`datasets.Dataset` of the documents, against the suite's stand-in of the hub with a bandwidth limit per
connection (as a hub far away gives one connection).

    python benchmarks/hub_download.py --files 8 --file_mb 8 --mb_per_second 4 --num_proc 1,4

Two ways, each in a fresh process with empty caches, for each `--num_proc`:
- `kit`: what `prepare_data.py` does (preparation.hub): the commit and file list, `snapshot_download` of the files
  in `num_proc` threads, each checked against its sha256, then the parquet builder on the local files in
  `num_proc` processes;
- `datasets`: `datasets.load_dataset(repo, config, num_proc=N)`, which downloads and converts in one call.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the stand-in of the hub lives with the tests it was made for

from support.hub import HubStandIn, write_fineweb_edu  # noqa: E402

from formats.packed_data import FINEWEB_EDU  # noqa: E402

WORDS = np.array("the of and to in a is that for it as was with be by on not he this are or his from at which "
                 "but have an they you were their one all we can her has there been if more when will would who "
                 "so no".split())


def synthetic_documents(megabytes: float, seed: int) -> list[str]:
    """English-like documents of about 1,000 words whose parquet file is about `megabytes` (snappy compresses
    them about 2x)."""
    rng = np.random.default_rng(seed)
    count = max(1, int(megabytes * 2e6 / 4_700))
    return [" ".join(WORDS[rng.integers(0, len(WORDS), 1_000)]) for _ in range(count)]


def timed_load(way: str, num_proc: int) -> dict:
    """In this process: the documents from the hub named by HF_ENDPOINT, timed; what --worker runs."""
    import datasets

    started = time.perf_counter()
    if way == "datasets":
        corpus = datasets.load_dataset(FINEWEB_EDU, "sample-10BT", split="train", num_proc=num_proc)
    else:
        from preparation.corpus import CorpusSource, load_corpus
        from preparation.hub import RetryPolicy, locate

        source = CorpusSource(FINEWEB_EDU, "sample-10BT", None, "train", None, "text", "document", None, False, None)
        hub = locate(FINEWEB_EDU, "sample-10BT", "train", None, None, RetryPolicy())
        corpus = load_corpus(source, num_proc, hub)
    return {"seconds": time.perf_counter() - started, "documents": len(corpus)}


def measure(root: Path, way: str, num_proc: int, bytes_per_second: float) -> dict:
    with HubStandIn(root, bytes_per_second=bytes_per_second) as hub, tempfile.TemporaryDirectory() as home:
        env = {**os.environ, **hub.environment(Path(home)), "HF_HUB_DOWNLOAD_TIMEOUT": "60"}
        done = subprocess.run([sys.executable, __file__, "--worker", way, str(num_proc)], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{way} with num_proc {num_proc} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {**result, "most_parallel_downloads": hub.most_parallel}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--file_mb", type=float, default=8.0)
    parser.add_argument("--mb_per_second", type=float, default=4.0, help="per connection")
    parser.add_argument("--num_proc", default="1,4")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(timed_load(args.worker[0], int(args.worker[1]))))
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_fineweb_edu(root, [synthetic_documents(args.file_mb, seed) for seed in range(args.files)])
        total = sum(p.stat().st_size for p in (root / "datasets" / FINEWEB_EDU / "sample").rglob("*.parquet"))
        print(f"{args.files} files, {total / 1e6:.1f} MB, {args.mb_per_second} MB/s per connection")
        print("| way | num_proc | seconds | most parallel downloads | documents |")
        print("| --- | --- | --- | --- | --- |")
        for num_proc in map(int, args.num_proc.split(",")):
            for way in ("kit", "datasets"):
                result = measure(root, way, num_proc, args.mb_per_second * 1e6)
                print(f"| {way} | {num_proc} | {result['seconds']:.1f} | {result['most_parallel_downloads']} | "
                      f"{result['documents']:,} |", flush=True)


if __name__ == "__main__":
    main()

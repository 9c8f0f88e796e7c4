"""Can the loop's data loading keep a GPU fed? Tokens/s that `training.data.train_batches` delivers.

    python benchmarks/data_loading.py --data_dir outputs/sm1024/data          # any prepare_data.py output

Reads micro-batches exactly as the training loop does (the world-size-invariant order, memory-mapped
Arrow rows, a DataLoader with 0 and with N worker processes), with no model attached, and compares the
rate with what one GPU consumes at the throughput goal (500,000 tokens/s for GPT-2 124M on an H100).
"""

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

from accelerate import Accelerator

from formats.packed_data import read_metadata
from training.arguments import parse_config
from training.data import BatchPlan, batch_order, build_data, train_batches

GPU_TOKENS_PER_SECOND = 500_000  # the per-GPU goal of benchmarks/throughput.py


def loader_rate(data_dir: str, micro_batch: int, workers: int, batches: int, repeats: int) -> tuple[float, str]:
    """Median tokens/s over `repeats` windows of `batches` micro-batches, after the workers have started; and
    the sha256 of the first micro-batch's inputs (what the loop would train on first)."""
    block_size = read_metadata(data_dir)["block_size"]
    config = parse_config(["--data_dir", data_dir, "--micro_batch_size", str(micro_batch), "--dataloader_workers",
                           str(workers), "--total_batch_tokens", str(micro_batch * block_size), "--report_to", "none"])
    data = build_data(config, world_size=1)
    plan = BatchPlan(micro_batch, accumulation=1, processes=1)
    order = batch_order(data, plan, config.data.seed, rank=0, start_step=0)
    stream = train_batches(data, order, config, Accelerator(cpu=True))
    first_inputs, _targets = next(stream)
    first = hashlib.sha256(first_inputs.numpy().tobytes()).hexdigest()
    for _ in range(2 * max(workers, 1)):
        next(stream)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            inputs, _targets = next(stream)
        rates.append(batches * inputs.numel() / (time.perf_counter() - start))
    return statistics.median(rates), first


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="A prepare_data.py output directory.")
    parser.add_argument("--micro_batch", type=int, default=64)
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts to compare, comma-separated.")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        rate, first = loader_rate(args.data_dir, args.micro_batch, workers, args.batches, args.repeats)
        results.append({"workers": workers, "tokens_per_second": rate, "gpus_fed": rate / GPU_TOKENS_PER_SECOND,
                        "first_batch_sha256": first})
        print(f"{workers} workers: {rate:>14,.0f} tokens/s = {rate / GPU_TOKENS_PER_SECOND:,.1f} x one GPU's "
              f"{GPU_TOKENS_PER_SECOND:,} tokens/s")
    report = {"data_dir": args.data_dir, "micro_batch": args.micro_batch, "results": results}
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

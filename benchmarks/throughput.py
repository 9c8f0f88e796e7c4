"""Training throughput of the loop's real step: our GPT-2 against stock `transformers.GPT2LMHeadModel`.

    python benchmarks/throughput.py                      # GPU: GPT-2 124M, micro-batch 64 x 1024, bf16, compiled
    python benchmarks/throughput.py --tiny               # CPU smoke run in seconds (what CI exercises)

Both models run in one process, on one device, through `run_pretrain.train_step` (forward, backward,
clipping) plus the fused AdamW step, with the same dtype, compile setting and accumulation. Each is
warmed up (compilation included), then timed step by step with device synchronisation; medians of
`--steps` steps are reported: tokens/s, ms per step, MFU against the data-sheet bf16 peak and against
a measured large bf16 matmul, and peak memory. The ratio ours / stock is the headline.
"""

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from accelerate import Accelerator  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from configuration import GPT2ScratchConfig  # noqa: E402
from modeling_gpt2_scratch import GPT2ScratchForCausalLM  # noqa: E402
from run_pretrain import build_optimizer, device_peak_flops, flops_per_token, parse_config, train_step  # noqa: E402

SIZES = {"124m": dict(n_layer=12, n_head=12, n_embd=768), "tiny": dict(n_layer=2, n_head=4, n_embd=128)}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_matmul_flops(device, dtype) -> float | None:
    """FLOP/s of a large square matmul: what this device really delivers, for a second MFU figure."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    b = torch.randn(8192, 8192, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    synchronize(device)
    return 20 * 2 * 8192**3 / (time.perf_counter() - start)


def build(kind: str, size: dict, seq_len: int, vocab: int) -> torch.nn.Module:
    if kind == "ours":
        return GPT2ScratchForCausalLM(GPT2ScratchConfig(vocab_size=vocab, n_positions=seq_len, **size))
    config = GPT2Config(vocab_size=vocab, n_positions=seq_len, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        attn_implementation="sdpa", **size)
    return GPT2LMHeadModel(config)


def benchmark(kind: str, args, accelerator: Accelerator, run_config) -> dict:
    device = accelerator.device
    model = build(kind, SIZES[args.size], args.seq_len, args.vocab).to(device)
    optimizer, _ = build_optimizer(model, run_config, device)
    model, optimizer = accelerator.prepare(model, optimizer)
    if args.compile:
        model = torch.compile(model)
    batch = torch.randint(0, args.vocab, (args.micro_batch, args.seq_len + 1), device=device)
    inputs, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    batches = iter(lambda: (inputs, targets), None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        start = time.perf_counter()
        train_step(model, optimizer, batches, args.accumulation, run_config, accelerator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step_time = statistics.median(times)
    tokens = args.micro_batch * args.seq_len * args.accumulation
    unwrapped = accelerator.unwrap_model(model)
    n_params = sum(p.numel() for p in unwrapped.parameters())
    result = {
        "model": kind, "parameters": n_params, "ms_per_step": 1000 * step_time, "tokens_per_second": tokens / step_time,
        "step_time_spread": [min(times), max(times)],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    # Model FLOPs of GPT-2 124M itself (50,257-wide head), the same for both, so MFU compares like with like.
    model_flops = flops_per_token(GPT2ScratchConfig(vocab_size=50257, n_positions=args.seq_len, **SIZES[args.size]),
                                  _gpt2_params(args.size, args.seq_len), args.seq_len) * tokens / step_time
    result["mfu_vs_datasheet"] = model_flops / args.peak if args.peak else None
    result["mfu_vs_measured_matmul"] = model_flops / args.matmul if args.matmul else None
    del model, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _gpt2_params(size: str, seq_len: int) -> int:
    s = SIZES[size]
    per_block = 12 * s["n_embd"] ** 2 + 13 * s["n_embd"]
    return s["n_layer"] * per_block + 50257 * s["n_embd"] + seq_len * s["n_embd"] + 2 * s["n_embd"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: tiny model, float32, no compile.")
    parser.add_argument("--size", choices=sorted(SIZES), default="124m")
    parser.add_argument("--micro_batch", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--mixed_precision", default="bf16", choices=["no", "bf16"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", default="ours,stock")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.micro_batch, args.seq_len, args.mixed_precision, args.compile = "tiny", 8, 128, "no", False
        args.vocab, args.warmup, args.steps = 2048, 2, min(args.steps, 10)

    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    torch.backends.cuda.matmul.allow_tf32 = True
    run_config = parse_config(["--max_grad_norm=1.0", f"--mixed_precision={args.mixed_precision}"])
    device = accelerator.device
    args.peak = device_peak_flops(device)
    args.matmul = measured_matmul_flops(device, torch.bfloat16)
    results = [benchmark(kind, args, accelerator, run_config) for kind in args.models.split(",")]
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "setting": {k: getattr(args, k) for k in ("size", "micro_batch", "seq_len", "accumulation",
                                                 "mixed_precision", "compile", "warmup", "steps", "vocab")},
        "datasheet_bf16_flops": args.peak, "measured_matmul_flops": args.matmul, "results": results,
    }
    speed = {r["model"]: r["tokens_per_second"] for r in results}
    if {"ours", "stock"} <= speed.keys():
        report["ratio_ours_over_stock"] = speed["ours"] / speed["stock"]
    for r in results:
        mfu = f", MFU {r['mfu_vs_datasheet']:.1%}" if r["mfu_vs_datasheet"] else ""
        memory = f", peak {r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] else ""
        speed = f"{r['tokens_per_second']:>12,.0f} tokens/s  {r['ms_per_step']:8.1f} ms/step"
        print(f"{r['model']:>6}: {speed}{mfu}{memory}")
    if "ratio_ours_over_stock" in report:
        print(f"ratio ours / stock: {report['ratio_ours_over_stock']:.2f}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

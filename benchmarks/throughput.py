"""Training throughput of the loop's real step: our GPT-2 against stock `transformers.GPT2LMHeadModel`.

    python benchmarks/throughput.py                      # GPU: GPT-2 124M, micro-batch 64 x 1024, bf16, compiled
    python benchmarks/throughput.py --micro_batch 32 --models ours          # the memory goal: peak at 32 x 1024
    accelerate launch --num_processes 8 benchmarks/throughput.py --models ours       # DDP (see ddp_scaling.py)
    python benchmarks/throughput.py --tiny               # CPU smoke run in seconds (what CI exercises)

Both models run on one device through the training loop's own pieces: `build_accelerator` (DDP
settings, compile mode, TF32), `build_optimizer` (fused AdamW), `train_step` (forward, backward,
accumulation, clipping) and `finish_step` (the one host sync that agrees on skipping, then the update),
with the same dtype, compile setting and accumulation. Each model is warmed up (compilation included),
then timed step by step with device synchronisation; medians of `--steps` steps are reported:
tokens/s, ms per step, MFU against the data-sheet bf16 peak and against a measured large bf16 matmul,
and peak memory. The ratio ours / stock is the headline.

After timing, a few steps run under the torch profiler: the top kernels (GPU) or operators (CPU) by
self time, the attention implementation SDPA dispatched to (flash, cuDNN, memory-efficient or math),
and, on CUDA, the synchronising operations of one whole step (CUDA's sync debug mode). In eager mode
a step also counts the times the train step reads a device value back to the host (`.item()`,
`bool(tensor)`, `nonzero`): the loop's only read is meant to be `finish_step`'s.
"""

import argparse
import dataclasses
import json
import resource
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import GPT2Config, GPT2LMHeadModel

from benchmarks import optimizer_comparison
from configuration import GPT2ScratchConfig
from formats.packed_data import inputs_and_targets
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.accelerator import build_accelerator
from training.arguments import AcceleratorArguments, OptimizationArguments, parse_config, read_yaml_config
from training.measurement import (
    HostReads,
    count_cuda_syncs,
    cuda_driver,
    device_peak_flops,
    flops_per_token,
    measured_matmul_flops,
    mfu,
    profile_steps,
    synchronize,
)
from training.optimizer import build_optimizer
from training.step import finish_step, train_step

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAPE = ("n_layer", "n_head", "n_embd")


def recipe_shape(config_file: str) -> dict:
    """The model shape a shipped recipe trains, so that the benchmark measures that model."""
    settings = read_yaml_config(str(REPO_ROOT / "configs" / config_file))
    return {name: settings[name] for name in SHAPE}


SIZES = {"124m": recipe_shape("gpt2_124m_fineweb_edu.yaml"), "tiny": dict(n_layer=2, n_head=4, n_embd=128),
         "4x256": {name: optimizer_comparison.MODEL[name] for name in SHAPE}}


def loop_setting(arguments: type, name: str) -> dict:
    """Default and choices of one of the training loop's settings, so the benchmark takes the same."""
    setting = next(f for f in dataclasses.fields(arguments) if f.name == name)
    return {"default": setting.default, "choices": setting.metadata.get("choices")}


def loop_default(arguments: type, name: str):
    return loop_setting(arguments, name)["default"]


@dataclasses.dataclass(frozen=True)
class ThroughputSettings:
    """What one measurement runs: the model's size and batch shape, the loop's settings, how long to time."""

    size: str = "124m"
    micro_batch: int = 64
    seq_len: int = 1024
    accumulation: int = 1
    vocab: int = 50257
    mixed_precision: str = "bf16"
    compile: bool = True
    compile_mode: str = loop_default(AcceleratorArguments, "compile_mode")
    ddp_bucket_cap_mb: int = loop_default(AcceleratorArguments, "ddp_bucket_cap_mb")
    ddp_comm_hook: str = loop_default(AcceleratorArguments, "ddp_comm_hook")
    optimizer: str = loop_default(OptimizationArguments, "optimizer")
    muon_qkv: str = loop_default(OptimizationArguments, "muon_qkv")
    warmup: int = 5
    steps: int = 20
    models: tuple = ("ours", "stock")
    profile_steps: int = 3  # steps under the profiler (0: none)
    top: int = 15  # kernels or operators listed from the profile
    trace_dir: Path | None = None  # each model's Chrome trace
    output: Path | None = None  # the report as JSON

    def run_config(self):
        """The training loop's configuration for these settings."""
        return parse_config([f"--mixed_precision={self.mixed_precision}", f"--compile={self.compile}",
                             f"--compile_mode={self.compile_mode}", f"--ddp_bucket_cap_mb={self.ddp_bucket_cap_mb}",
                             f"--ddp_comm_hook={self.ddp_comm_hook}", f"--optimizer={self.optimizer}",
                             *([f"--muon_qkv={self.muon_qkv}"] if self.optimizer == "muon" else []),
                             "--max_grad_norm=1.0", "--tf32=true", "--report_to=none"])


# The CPU smoke run's settings (--tiny): a tiny model, float32, no compile.
TINY = dict(size="tiny", micro_batch=8, seq_len=128, mixed_precision="no", vocab=2048, warmup=2, compile=False)


def build(kind: str, size: dict, seq_len: int, vocab: int) -> torch.nn.Module:
    if kind == "ours":
        return GPT2ScratchForCausalLM(GPT2ScratchConfig(vocab_size=vocab, n_positions=seq_len, **size))
    config = GPT2Config(vocab_size=vocab, n_positions=seq_len, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        attn_implementation="sdpa", **size)
    return GPT2LMHeadModel(config)


def benchmark(kind: str, args: ThroughputSettings, accelerator: Accelerator, run_config, peak: float | None,
              matmul: float | None) -> dict:
    device = accelerator.device
    # A fresh compiler state: a shape seen earlier in this process would otherwise be recompiled as dynamic.
    torch._dynamo.reset()
    model = build(kind, SIZES[args.size], args.seq_len, args.vocab).to(device)
    optimizer = build_optimizer(model, run_config, device)
    model = optimizer.prepare(model, accelerator)  # compiles when the run config says so
    batch = torch.randint(0, args.vocab, (args.micro_batch, args.seq_len + 1), device=device)
    inputs, targets = inputs_and_targets(batch)
    batches = iter(lambda: (inputs, targets), None)

    def run_step():
        result = train_step(model, batches, args.accumulation, run_config, accelerator)
        finish_step(optimizer, result, False, accelerator)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        start = time.perf_counter()
        run_step()
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step_time = statistics.median(times)
    tokens = args.micro_batch * args.seq_len * args.accumulation * accelerator.num_processes
    result = {
        "model": kind, "parameters": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
        "ms_per_step": 1000 * step_time, "tokens_per_second": tokens / step_time,
        "tokens_per_second_per_process": tokens / step_time / accelerator.num_processes,
        "step_time_spread": [min(times), max(times)],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        # What the caching allocator held at most: the footprint a smaller card must have room for.
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None,
        # On CPU: the process's high-water mark so far, so compare models run in separate processes.
        "peak_process_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    # Model FLOPs of each model's own matrices and unpadded head (ours pads 50,257 to 50,304): like with like.
    per_token, n = flops_per_token(accelerator.unwrap_model(model), args.seq_len), accelerator.num_processes
    result["mfu_vs_datasheet"] = mfu(tokens / step_time, per_token, peak * n if peak else None)
    result["mfu_vs_measured_matmul"] = mfu(tokens / step_time, per_token, matmul * n if matmul else None)
    if not args.compile:  # a dispatch mode sees eager operators only
        with HostReads() as reads:
            train_step(model, batches, args.accumulation, run_config, accelerator)
        optimizer.zero_grad(set_to_none=True)
        result["host_reads_in_train_step"] = reads.count
    if device.type == "cuda":  # the loop's whole step, finish_step's deliberate flag agreement included
        result["cuda_syncs_per_step"] = count_cuda_syncs(run_step)
    if args.profile_steps:
        trace = args.trace_dir / f"trace_{kind}.json" if args.trace_dir else None
        result["profile"] = profile_steps(run_step, args.profile_steps, device, args.top, trace)
    return result


def print_report(report: dict):
    for r in report["results"]:
        if "error" in r:
            print(f"{r['model']:>6}: {r['error']}")
            continue
        mfu = f", MFU {r['mfu_vs_datasheet']:.1%}" if r["mfu_vs_datasheet"] else ""
        memory = (f", peak {r['peak_memory_gib']:.1f} GiB allocated, {r['peak_reserved_gib']:.1f} GiB reserved"
                  if r["peak_memory_gib"] else "")
        speed = f"{r['tokens_per_second']:>12,.0f} tokens/s  {r['ms_per_step']:8.1f} ms/step"
        print(f"{r['model']:>6}: {speed}{mfu}{memory}")
        if "host_reads_in_train_step" in r:
            print(f"        host reads in the train step: {r['host_reads_in_train_step']}")
        if "cuda_syncs_per_step" in r:
            print(f"        synchronising CUDA operations per step: {r['cuda_syncs_per_step']}")
        if "profile" in r:
            p = r["profile"]
            print(f"        attention: {', '.join(p['attention_backend']) or 'none seen'}")
            for op in p["top"]:
                print(f"        {op['share']:6.1%} {op['ms_per_step']:9.3f} ms  {op['name'][:90]}")
    if "ratio_ours_over_stock" in report:
        print(f"ratio ours / stock: {report['ratio_ours_over_stock']:.2f}")


def parse_args(argv=None) -> ThroughputSettings:
    defaults = ThroughputSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: tiny model, float32, no compile.")
    parser.add_argument("--size", choices=sorted(SIZES), default=defaults.size)
    parser.add_argument("--micro_batch", type=int, default=defaults.micro_batch)
    parser.add_argument("--seq_len", type=int, default=defaults.seq_len)
    parser.add_argument("--accumulation", type=int, default=defaults.accumulation)
    parser.add_argument("--vocab", type=int, default=defaults.vocab)
    parser.add_argument("--mixed_precision", default=defaults.mixed_precision, choices=["no", "bf16"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile both models (default: on, except with --tiny).")
    parser.add_argument("--compile_mode", **loop_setting(AcceleratorArguments, "compile_mode"))
    parser.add_argument("--ddp_bucket_cap_mb", type=int, help="DDP all-reduce bucket size (MiB).",
                        **loop_setting(AcceleratorArguments, "ddp_bucket_cap_mb"))
    parser.add_argument("--ddp_comm_hook", help="Gradients all-reduced in bf16 or fp16 (DDP runs only).",
                        **loop_setting(AcceleratorArguments, "ddp_comm_hook"))
    parser.add_argument("--optimizer", **loop_setting(OptimizationArguments, "optimizer"),
                        help="The loop's optimizer: muon adds its Newton-Schulz matmuls to the step.")
    parser.add_argument("--muon_qkv", **loop_setting(OptimizationArguments, "muon_qkv"),
                        help="With muon: orthogonalize c_attn whole or as query, key and value apart.")
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--models", default=",".join(defaults.models))
    parser.add_argument("--profile_steps", type=int, default=defaults.profile_steps,
                        help="Steps under the profiler (0: none).")
    parser.add_argument("--top", type=int, default=defaults.top, help="Kernels or operators listed from the profile.")
    parser.add_argument("--trace_dir", type=Path, default=None, help="Write each model's Chrome trace here.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = vars(parser.parse_args(argv))
    tiny = args.pop("tiny")
    args["models"] = tuple(args["models"].split(","))
    if tiny:
        args.update(TINY, steps=min(args["steps"], 10))
    if args["compile"] is None:
        args["compile"] = not tiny
    return ThroughputSettings(**args)


def measure(settings: ThroughputSettings) -> dict:
    """Each of `settings.models` through the loop's step on this device: the report (printed, and written to
    `settings.output` when given)."""
    run_config = settings.run_config()
    accelerator = build_accelerator(run_config)
    device = accelerator.device
    peak = device_peak_flops(device)
    matmul = measured_matmul_flops(device, torch.bfloat16) if device.type == "cuda" else None
    if settings.trace_dir:
        settings.trace_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for kind in settings.models:
        try:
            results.append(benchmark(kind, settings, accelerator, run_config, peak, matmul))
        except torch.OutOfMemoryError as error:  # a result in itself; the other model is still measured
            results.append({"model": kind, "error": str(error).splitlines()[0]})
        accelerator.free_memory()  # drops its references to the prepared model, so the next starts empty
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "processes": accelerator.num_processes,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "accelerate": __import__("accelerate").__version__,
        "cuda_driver": cuda_driver() if device.type == "cuda" else None,
        "setting": {k: v for k, v in dataclasses.asdict(settings).items()
                    if k not in ("models", "profile_steps", "top", "trace_dir", "output")},
        "datasheet_bf16_flops": peak, "measured_matmul_flops": matmul, "results": results,
    }
    speed = {r["model"]: r["tokens_per_second"] for r in results if "error" not in r}
    if {"ours", "stock"} <= speed.keys():
        report["ratio_ours_over_stock"] = speed["ours"] / speed["stock"]
    if accelerator.is_main_process:
        print_report(report)
        if settings.output:
            settings.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> dict:
    return measure(parse_args(argv))


if __name__ == "__main__":
    main()

"""What the device gets: the precision it supports, the attention kernel to expect, and start-up's account of both.

- `device_precision`: `--mixed_precision auto` as bf16 where the device supports it, fp16 (with dynamic
  loss scaling) on GPUs without bf16, none on CPU; `has_tf32`: TF32 matmuls from Ampere on.
- `expected_attention`: the SDPA kernel torch picks for this shape and dtype.
- `setup_report`: precision, kernel, micro-batch and the memory estimate beside the device's total.
"""

import torch
from accelerate import Accelerator

from training.arguments import AUTO
from training.data import BatchPlan
from training.measurement import flash_attention_check
from training.memory import memory_estimate


def choose_precision(requested: str, has_cuda: bool, has_bf16: bool) -> str:
    if requested != AUTO:
        return requested
    if not has_cuda:
        return "no"
    return "bf16" if has_bf16 else "fp16"


def device_precision(requested: str) -> str:
    """`requested`, or for auto what this machine's first GPU supports (none on CPU)."""
    has_cuda = torch.cuda.is_available()
    return choose_precision(requested, has_cuda, has_cuda and torch.cuda.is_bf16_supported())


def has_tf32() -> bool:
    """TF32 tensor cores exist from Ampere (compute capability 8.0) on."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def expected_attention(device: torch.device, precision: str, n_head: int, head_dim: int, block_size: int) -> str:
    """The SDPA kernel torch would pick for causal attention of this shape and dtype on this device."""
    if device.type != "cuda":
        return "flash (the CPU kernel)"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    flash, efficient, _ = flash_attention_check(device, dtype, 1, n_head, block_size, head_dim)
    if flash is None:  # torch could not be asked: flash from Ampere on in 16-bit
        major = torch.cuda.get_device_capability(device)[0]
        return "flash" if dtype != torch.float32 and major >= 8 else "memory-efficient"
    return "flash" if flash else "memory-efficient" if efficient else "math"


def setup_report(config, plan: BatchPlan, block_size: int, model, accelerator: Accelerator) -> dict:
    """Start-up's account of what the device gets; `summary` is the printed form."""
    device, precision = accelerator.device, accelerator.mixed_precision
    shape = model.config
    attention = expected_attention(device, precision, shape.n_head, shape.n_embd // shape.n_head, block_size)
    micro_batch, accumulation = plan.micro_batch, plan.accumulation
    estimate = memory_estimate(model, config.optimization.optimizer, micro_batch, block_size, precision,
                               config.model.gradient_checkpointing)
    if device.type == "cuda":
        name, total = torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory
    else:
        import psutil

        name, total = "cpu", psutil.virtual_memory().total
    gib = 2**30
    summary = (f"{model.num_parameters():,} parameters, {accelerator.num_processes} processes on {name}: precision "
               f"{precision}, attention {attention}, micro-batch {micro_batch} x {block_size}, accumulation "
               f"{accumulation} ({config.data.total_batch_tokens:,} tokens per step); peak memory about "
               f"{estimate.total / gib:.1f} GiB (weights {estimate.weights / gib:.1f}, gradients "
               f"{estimate.gradients / gib:.1f}, optimizer {estimate.optimizer / gib:.1f}, activations "
               f"{estimate.activations / gib:.1f}) of {total / gib:.1f} GiB")
    return {"summary": summary, "device": name, "processes": accelerator.num_processes, "precision": precision,
            "attention": attention, "micro_batch_size": micro_batch, "accumulation": accumulation,
            "estimated_peak_bytes": estimate.total, "device_bytes": total}

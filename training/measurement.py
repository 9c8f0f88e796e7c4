"""What the loop, the benchmarks and the pre-flight check measure, and the device probes they share.

- model FLOPs (`flops_per_token`), the data sheet's peak (`device_peak_flops`) and MFU, computed in one place
  (`mfu`), against the data sheet or a measured matmul rate (`measured_matmul_flops`);
- the loop's tokens/s and MFU (`ThroughputMeter`);
- the device: the NVIDIA driver (`cuda_driver`), which SDPA kernels run (`sdpa_kernels_that_run`), whether
  flash attention takes a shape and torch's reasons if not (`flash_attention_check`);
- where a step's time goes: the profiler (`profile_steps`, `sdpa_backend`), host reads of device values
  (`HostReads`) and synchronising CUDA operations (`count_cuda_syncs`).
"""

import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils._python_dispatch import TorchDispatchMode

from training.optimizer import hidden_matrices

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, matched against the device name.
PEAK_BF16_FLOPS = {
    "H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "GH200": 989e12,
    "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12, "A10G": 70e12, "A10": 125e12,
    "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "A6000": 155e12, "MI300X": 1307e12, "MI250X": 383e12,
}  # fmt: skip


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():  # the table lists more specific names first
        if key in name:
            return flops
    return None


def flops_per_token(model, seq_len: int) -> float:
    """Model FLOPs per trained token: 6 per matmul weight (2 forward, 4 backward), the blocks' weights counted
    from the model's own parameters (any MLP width), the head's `vocab_size` rows included and its padding rows
    not; plus attention's scores and mixing over `seq_len` positions. Ours and stock GPT-2 count alike."""
    config = model.config
    matmul_weights = sum(p.numel() for _, p in hidden_matrices(model)) + config.vocab_size * config.n_embd
    return 6 * matmul_weights + 12 * config.n_layer * config.n_embd * seq_len


def mfu(tokens_per_second: float, flops_per_trained_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilization: the model FLOPs a second that training delivered over a peak rate (data sheet or
    measured; times the number of processes when the rate is the whole job's)."""
    return tokens_per_second * flops_per_trained_token / peak_flops if peak_flops else None


class ThroughputMeter:
    """Tokens/s and MFU of the training steps since the last report, time spent `paused()` left out."""

    def __init__(self, model, block_size: int, tokens_per_step: int, accelerator: Accelerator):
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token(model, block_size)
        peak = device_peak_flops(accelerator.device)
        self.peak_flops = peak * accelerator.num_processes if peak else None
        self.steps, self.started, self.excluded = 0, time.perf_counter(), 0.0

    @contextmanager
    def paused(self):
        """Evaluation, sampling and checkpoints are not training time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - start

    def report(self) -> dict:
        elapsed = time.perf_counter() - self.started - self.excluded
        tokens_per_second = self.tokens_per_step * self.steps / elapsed
        self.steps, self.started, self.excluded = 0, time.perf_counter(), 0.0
        return {"tokens_per_second": tokens_per_second,
                "mfu": mfu(tokens_per_second, self.flops_per_token, self.peak_flops)}


# --- the device ---

def available_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 8192, repeats: int = 20) -> float:
    """FLOP/s of a large square matmul on random data: what this device really delivers, for a second MFU figure."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return repeats * 2 * size**3 / (time.perf_counter() - start)


def cuda_driver() -> str | None:
    """The NVIDIA driver version, as nvidia-smi prints it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def sdpa_kernels_that_run(device: torch.device) -> dict:
    """Each SDPA backend forced alone on a small bf16 causal attention: True, or why it did not run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 4, 128, 64, device=device, dtype=torch.bfloat16)
    found = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        try:
            with sdpa_kernel([getattr(SDPBackend, name)]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            found[name.lower()] = True
        except Exception as error:
            found[name.lower()] = str(error).splitlines()[0][:200]
    return found


def flash_attention_check(device: torch.device, dtype: torch.dtype, batch: int, n_head: int, seq_len: int,
                          head_dim: int) -> tuple[bool | None, bool | None, str]:
    """Whether SDPA's flash and memory-efficient kernels take causal attention of this shape and dtype, by torch's
    own `can_use_*_attention`, and torch's reasons against flash; (None, None, why) when torch cannot be asked
    (its query API changes between releases)."""
    q = torch.empty(batch, n_head, seq_len, head_dim, device=device, dtype=dtype)
    try:
        params = torch.backends.cuda.SDPAParams(q, q, q, None, 0.0, True, False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flash = torch.backends.cuda.can_use_flash_attention(params, debug=True)
        efficient = torch.backends.cuda.can_use_efficient_attention(params)
        return flash, efficient, "; ".join(str(w.message).splitlines()[0] for w in caught)
    except (AttributeError, TypeError, RuntimeError) as error:
        return None, None, f"could not ask torch ({type(error).__name__}: {error})"


# --- where a step's time goes ---

# Operators that copy a device value to the host; on a GPU each one waits for all queued work.
HOST_READ_OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
                 torch.ops.aten.nonzero.default, torch.ops.aten.equal.default}
# aten::_scaled_dot_product_<name>_attention... or ..._attention_math: which SDPA implementation ran.
SDPA_BACKENDS = {"flash": "flash", "cudnn": "cuDNN", "efficient": "memory-efficient", "math": "math"}


class HostReads(TorchDispatchMode):
    """Counts operators that read a device value back to the host while active (eager code only)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in HOST_READ_OPS
        return func(*args, **(kwargs or {}))


def sdpa_backend(op_name: str) -> str | None:
    words = op_name.removeprefix("aten::_scaled_dot_product_").split("_")
    return next((label for key, label in SDPA_BACKENDS.items() if key in words), None)


def count_cuda_syncs(run_step) -> int:
    """Synchronising CUDA operations in one step, as CUDA's sync debug mode reports them (compiled code too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def profile_steps(run_step, steps: int, device: torch.device, top: int, trace_path: Path | None) -> dict:
    """Where a step's time goes: top kernels (GPU) or operators (CPU), and the SDPA implementation that ran."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            run_step()
        synchronize(device)
    if trace_path is not None:
        prof.export_chrome_trace(str(trace_path))
    events = prof.key_averages()
    if device.type == "cuda":  # kernels, by the time they occupy the GPU
        timed = [(e.key, e.self_device_time_total) for e in events if e.device_type.name == "CUDA"]
    else:
        timed = [(e.key, e.self_cpu_time_total) for e in events]
    timed = sorted((t for t in timed if t[1] > 0), key=lambda t: -t[1])
    total = sum(t for _, t in timed)
    attention_ops = sorted(e.key for e in events if e.key.startswith("aten::_scaled_dot_product_")
                           and not e.key.endswith("_backward"))
    return {
        "top": [{"name": name, "ms_per_step": t / 1000 / steps, "share": t / total} for name, t in timed[:top]],
        "attention_ops": attention_ops,
        "attention_backend": sorted({sdpa_backend(op) for op in attention_ops} - {None}),
    }

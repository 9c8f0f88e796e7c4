"""Stage 1: the GPU, driver and library versions; which attention kernels run; the bf16 matmul rate it delivers."""

import platform

import torch

from benchmarks.preflight.runner import Stage
from training.measurement import (
    available_device,
    cuda_driver,
    device_peak_flops,
    measured_matmul_flops,
    sdpa_kernels_that_run,
)


def run(stage: Stage) -> dict:
    import accelerate
    import transformers

    device = available_device()
    cuda = device.type == "cuda"
    record = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "driver": cuda_driver() if cuda else None, "cuda": torch.version.cuda, "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "datasets": package_version("datasets"), "tiktoken": package_version("tiktoken"),
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else True,
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
        "memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else None,
        "sdpa_kernels_that_run": sdpa_kernels_that_run(device),
        "datasheet_bf16_flops": device_peak_flops(device),
        "inputs": stage.sources.description,
    }
    size = stage.plan.matmul_size
    record["measured_bf16_matmul_flops"] = max(measured_matmul_flops(device, torch.bfloat16, size, 10)
                                               for _ in range(3))
    record["figures"] = {
        "device": f"{record['device']}, driver {record['driver']}, CUDA {record['cuda']}",
        "versions": f"torch {record['torch']}, transformers {record['transformers']}, "
                    f"accelerate {record['accelerate']}, datasets {record['datasets']}",
        "inputs": record["inputs"],
        "bf16 matmul, measured": f"{record['measured_bf16_matmul_flops'] / 1e12:,.0f} TFLOP/s "
                                 f"({size}^2, best of 3 x 10)",
        "SDPA kernels that run (bf16, causal)": ", ".join(k for k, ok in record["sdpa_kernels_that_run"].items()
                                                          if ok is True),
    }
    return record


def package_version(name: str) -> str:
    try:
        return __import__(name).__version__
    except Exception as error:  # an image may lack datasets until its wheels are installed
        return f"not importable ({type(error).__name__}: {error})"

"""What the loop measures: model FLOPs, MFU against the device's peak, tokens/s."""

import time
from contextlib import contextmanager

import torch
from accelerate import Accelerator

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


class ThroughputMeter:
    """Tokens/s and MFU of the training steps since the last report, time spent `paused()` left out."""

    def __init__(self, model, block_size: int, tokens_per_step: int, accelerator: Accelerator):
        self.tokens_per_step = tokens_per_step
        self.step_flops = flops_per_token(model, block_size) * tokens_per_step
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
        mfu = self.step_flops * self.steps / elapsed / self.peak_flops if self.peak_flops else None
        self.steps, self.started, self.excluded = 0, time.perf_counter(), 0.0
        return {"tokens_per_second": tokens_per_second, "mfu": mfu}

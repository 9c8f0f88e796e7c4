"""What "as accurate as stock GPT-2" means, once, for the CPU model tests and the GPU pre-flight check alike.

Two models with the same weights are compared two ways:
- in float32 (TF32 off) they are the same network computed by other kernels: their losses, logits and
  gradients agree to `FP32_RTOL`, relative;
- under bf16 autocast each rounds on its own: ours is as accurate as stock when its error against its
  own float32 result is within `AGREEMENT_FACTOR` times stock's error against stock's float32 result
  (plus `ERROR_FLOOR`, for errors that are nearly zero), and within the absolute bounds bf16's 8-bit
  mantissa allows: 1% on a loss, 5% relative RMS on logits or gradients after a dozen layers.
"""

import torch

FP32_RTOL = 1e-4
BF16_LOSS_RTOL, BF16_RMS_RTOL = 1e-2, 5e-2
# Two models rounding independently differ by about sqrt(2) of one model's error; 2x leaves room for noise.
AGREEMENT_FACTOR = 2.0
ERROR_FLOOR = 1e-4


def relative_rms(value: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS of the difference over RMS of the reference."""
    value, reference = value.double(), reference.double()
    return ((value - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()).item()


def relative_gap(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


def bf16_as_accurate_as_stock(ours_error: float, stock_error: float, bound: float) -> bool:
    """Ours' bf16 error (against its own float32) no worse than stock's, as defined above; `bound` is
    BF16_LOSS_RTOL for a loss, BF16_RMS_RTOL for logits or gradients."""
    return ours_error <= AGREEMENT_FACTOR * stock_error + ERROR_FLOOR and ours_error <= bound

"""What "as accurate as stock GPT-2" means, once, for the CPU model tests and the GPU pre-flight check alike.

Two models with the same weights are compared two ways:
- in float32 (TF32 off) they are the same network computed by other kernels: their losses, logits and
  gradients agree to `FP32_RTOL`, relative;
- under bf16 autocast each rounds on its own: ours is as accurate as stock when its error against its
  own float32 result is within `AGREEMENT_FACTOR` times stock's error against stock's float32 result
  (plus `ERROR_FLOOR`, for errors that are nearly zero), and within the absolute bounds bf16's 8-bit
  mantissa allows: 1% on a loss, 5% relative RMS on logits or gradients after a dozen layers.

`checks` gives the verdicts from quantities measured four ways (`Measured`); `assert_same_network` is the
float32 one as an assertion, for the CPU tests that compare two computations of one network.
"""

from dataclasses import dataclass

import torch

FP32_RTOL = 1e-4
BF16_LOSS_RTOL, BF16_RMS_RTOL = 1e-2, 5e-2
# Two models rounding independently differ by about sqrt(2) of one model's error; 2x leaves room for noise.
AGREEMENT_FACTOR = 2.0
ERROR_FLOOR = 1e-4


def relative_rms(value: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS of the difference over RMS of the reference."""
    value, reference = value.detach().double(), reference.detach().double()
    return ((value - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()).item()


def relative_gap(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


def bf16_as_accurate_as_stock(ours_error: float, stock_error: float, bound: float) -> bool:
    """Ours' bf16 error (against its own float32) no worse than stock's, as defined above; `bound` is
    BF16_LOSS_RTOL for a loss, BF16_RMS_RTOL for logits or gradients."""
    return ours_error <= AGREEMENT_FACTOR * stock_error + ERROR_FLOOR and ours_error <= bound


def gap(value, reference) -> float:
    """Relative gap of a scalar, relative RMS of a tensor."""
    if isinstance(value, torch.Tensor) and value.numel() > 1:
        return relative_rms(value, reference)
    as_float = lambda x: x.item() if isinstance(x, torch.Tensor) else float(x)  # noqa: E731
    return relative_gap(as_float(value), as_float(reference))


def assert_same_network(value, reference, what: str = "value"):
    """float32: the same network computed two ways (ours and stock with the same weights, or two paths of ours)
    agrees to FP32_RTOL: relative for a scalar, relative RMS for a tensor."""
    if isinstance(value, torch.Tensor):
        assert value.shape == reference.shape, f"{what}: shape {tuple(value.shape)} against {tuple(reference.shape)}"
    found = gap(value, reference)
    assert found <= FP32_RTOL, f"{what}: relative gap {found:.2e} > {FP32_RTOL:.0e}"


@dataclass(frozen=True)
class Measured:
    """One quantity (a loss, logits, a gradient) from ours and stock, in float32 and under bf16 autocast."""

    ours_fp32: torch.Tensor | float
    stock_fp32: torch.Tensor | float
    ours_bf16: torch.Tensor | float
    stock_bf16: torch.Tensor | float

    def own_errors(self) -> tuple[float, float]:
        """Each model's bf16 error against its own float32 result: (ours, stock)."""
        return gap(self.ours_bf16, self.ours_fp32), gap(self.stock_bf16, self.stock_fp32)


def checks(losses: list[Measured], tensors: list[Measured]) -> dict[str, bool]:
    """The verdicts of "as accurate as stock", each over every quantity given: scalar losses, and tensors
    (logits, gradients) compared by relative RMS."""
    quantities = losses + tensors
    return {
        "fp32: ours equals stock": all(gap(q.ours_fp32, q.stock_fp32) <= FP32_RTOL for q in quantities),
        "bf16: ours' losses as accurate as stock's": all(
            bf16_as_accurate_as_stock(*q.own_errors(), BF16_LOSS_RTOL) for q in losses),
        "bf16: ours' logits and gradients as accurate as stock's": all(
            bf16_as_accurate_as_stock(*q.own_errors(), BF16_RMS_RTOL) for q in tensors),
        "bf16: ours and stock no further apart than 2x either's own rounding": all(
            gap(q.ours_bf16, q.stock_bf16) <= AGREEMENT_FACTOR * max(q.own_errors()) + ERROR_FLOOR
            for q in quantities),
    }

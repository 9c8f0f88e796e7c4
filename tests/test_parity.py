"""eval/parity.py: the verdicts of "as accurate as stock", on hand-made numbers where each must pass or fail."""

import pytest
import torch

from eval.parity import FP32_RTOL, Measured, assert_same_network, checks


def loss(ours32=2.0, stock32=2.0, ours16=2.01, stock16=2.01) -> Measured:
    return Measured(ours32, stock32, ours16, stock16)


def logits(ours_error=0.01, stock_error=0.01, fp32_gap=0.0) -> Measured:
    torch.manual_seed(0)
    reference = torch.randn(4, 8, 16)
    noise = [torch.randn_like(reference) for _ in range(3)]
    unit = reference.pow(2).mean().sqrt()
    as_rms = lambda n, size: size * unit * n / n.pow(2).mean().sqrt()  # noqa: E731 (noise of that relative RMS)
    ours32 = reference + as_rms(noise[0], fp32_gap) if fp32_gap else reference
    return Measured(ours32, reference, ours32 + as_rms(noise[1], ours_error), reference + as_rms(noise[2], stock_error))


def test_equal_rounding_passes_every_verdict():
    assert all(checks([loss()], [logits()]).values())


@pytest.mark.parametrize("losses,tensors,failed", [
    ([loss(ours32=2.001)], [logits()], "fp32: ours equals stock"),  # 5e-4 apart in float32
    ([loss()], [logits(fp32_gap=1e-3)], "fp32: ours equals stock"),
    ([loss(ours16=2.05, stock16=2.001)], [logits()], "bf16: ours' losses as accurate as stock's"),
    ([loss()], [logits(ours_error=0.03, stock_error=0.01)], "bf16: ours' logits and gradients as accurate as stock's"),
    ([loss()], [logits(ours_error=0.06, stock_error=0.06)], "bf16: ours' logits and gradients as accurate as stock's"),
])  # fmt: skip
def test_each_verdict_fails_on_its_own_fault(losses, tensors, failed):
    verdicts = checks(losses, tensors)
    assert [name for name, ok in verdicts.items() if not ok][:1] == [failed]


def test_the_float32_assertion_holds_at_the_tolerance_and_fails_past_it():
    reference = torch.randn(3, 5)
    assert_same_network(reference * (1 + FP32_RTOL / 2), reference)
    with pytest.raises(AssertionError, match="logits: relative gap 1.00e-03 > 1e-04"):
        assert_same_network(reference * 1.001, reference, "logits")
    with pytest.raises(AssertionError, match="shape"):
        assert_same_network(reference[:2], reference)

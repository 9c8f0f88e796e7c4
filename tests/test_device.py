"""training/device.py: precision from the device's capabilities, and the attention kernel to expect."""

import pytest
import torch

from training import device
from training.measurement import sdpa_backend


@pytest.mark.parametrize("has_cuda,has_bf16,expected", [(True, True, "bf16"), (True, False, "fp16"),
                                                        (False, False, "no")])
def test_auto_precision_follows_the_devices_capabilities(monkeypatch, has_cuda, has_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    assert device.device_precision("auto") == expected
    assert device.device_precision("fp16") == "fp16"  # a stated precision is kept


def test_the_expected_attention_kernel_on_cpu_is_the_one_that_runs():
    q = torch.randn(1, 2, 64, 16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiled:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    ran = {sdpa_backend(event.key) for event in profiled.key_averages()} - {None}
    assert ran == {"flash"}  # the profiler's word, not the function's
    expected = device.expected_attention(torch.device("cpu"), "no", n_head=2, head_dim=16, block_size=64)
    assert expected.split()[0] in ran

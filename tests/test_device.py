"""training/device.py: precision from the device's capabilities, and the attention kernel to expect."""

import pytest
import torch

from training import device


@pytest.mark.parametrize("has_cuda,has_bf16,expected", [(True, True, "bf16"), (True, False, "fp16"),
                                                        (False, False, "no")])
def test_auto_precision_follows_the_devices_capabilities(monkeypatch, has_cuda, has_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    assert device.device_precision("auto") == expected
    assert device.device_precision("fp16") == "fp16"  # a stated precision is kept


def test_the_expected_attention_kernel_on_cpu():
    assert device.expected_attention(torch.device("cpu"), "no", 12, 64, 1024) == "flash (the CPU kernel)"

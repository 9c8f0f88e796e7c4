"""eval/__init__.py: `evaluating`, the mode every evaluation runs its model in."""

import torch
from support.tiny import tiny_config

from eval import evaluating
from modeling_gpt2_scratch import GPT2ScratchForCausalLM


class HalfPrecisionAccelerator:
    """Stands in for an Accelerator: its device and its autocast."""

    device = torch.device("cpu")

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16)


def test_eval_mode_without_gradients_then_the_models_own_mode_again():
    model = GPT2ScratchForCausalLM(tiny_config())
    for training in (True, False):
        model.train(training)
        with evaluating(model) as device:
            assert device == torch.device("cpu") and not model.training and not torch.is_grad_enabled()
            assert model(torch.zeros(1, 4, dtype=torch.long)).logits.dtype == torch.float32  # no autocast
        assert model.training is training and torch.is_grad_enabled()


def test_the_accelerators_autocast_is_used():
    model = GPT2ScratchForCausalLM(tiny_config())
    with evaluating(model, HalfPrecisionAccelerator()):
        assert model(torch.zeros(1, 4, dtype=torch.long)).logits.dtype == torch.bfloat16

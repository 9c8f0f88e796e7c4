"""training/step.py: one optimizer step: accumulation, clipping, and the update every process agrees on."""

import itertools

import pytest
import torch
from support.tiny import adamw_config, tiny_config

from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.optimizer import build_optimizer
from training.step import finish_step, train_step


def test_overfits_one_batch(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config(n_layer=2, n_embd=64, n_head=4, n_positions=32))
    config = adamw_config(learning_rate=3e-3, warmup_steps=0, weight_decay=0.0, max_steps=200)
    optimizer = build_optimizer(model, config, accelerator.device)
    rows = torch.randint(0, 101, (4, 33))
    batches = itertools.repeat((rows[:, :-1], rows[:, 1:]))
    for _ in range(200):
        result = train_step(model, batches, 1, config, accelerator)
        optimizer.step()
        optimizer.zero_grad()
    assert result.loss.item() < 0.1


def test_accumulation_is_exact(accelerator):
    torch.manual_seed(0)
    reference = GPT2ScratchForCausalLM(tiny_config())
    accumulated = GPT2ScratchForCausalLM(tiny_config())
    accumulated.load_state_dict(reference.state_dict())
    config = adamw_config(warmup_steps=0)
    rows = torch.randint(0, 101, (8, 17))
    grads = []
    for model, micro in ((reference, 8), (accumulated, 2)):
        optimizer = build_optimizer(model, config, accelerator.device)
        batches = iter([(rows[i : i + micro, :-1], rows[i : i + micro, 1:]) for i in range(0, 8, micro)])
        train_step(model, batches, 8 // micro, config, accelerator)
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    for (name, _), a, b in zip(reference.named_parameters(), *grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-5, msg=lambda m, name=name: f"gradient of {name}: {m}")
    # Adam's first update is lr * g / (|g| + eps): where |g| is near eps, float-level differences in g
    # move a weight by up to ~lr * 1e-3, hence the looser bound on the parameters.
    for (name, a), b in zip(reference.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_clipping_bounds_the_gradient_norm(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    config = adamw_config(max_grad_norm=0.01)
    rows = torch.randint(0, 101, (4, 17))
    result = train_step(model, iter([(rows[:, :-1], rows[:, 1:])]), 1, config, accelerator)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert result.grad_norm > 0.01  # the norm before clipping is reported
    assert clipped == pytest.approx(0.01, rel=1e-4)


def test_finish_step_skips_a_nonfinite_update_and_passes_preemption_on(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    config = adamw_config(warmup_steps=0)  # full learning rate from the first step
    optimizer = build_optimizer(model, config, accelerator.device)
    rows = torch.randint(0, 101, (4, 17))
    batch = (rows[:, :-1], rows[:, 1:])
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, iter([batch]), 1, config, accelerator)
    result.loss = torch.tensor(float("nan"))
    assert finish_step(optimizer, result, False, accelerator) == (True, False, False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    result = train_step(model, iter([batch]), 1, config, accelerator)
    assert finish_step(optimizer, result, True, accelerator) == (False, True, False)
    assert not torch.equal(before[0], model.transformer.wte.weight)

"""One optimizer step: accumulation over micro-batches, clipping, and the update agreed on by every process."""

from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
from accelerate import Accelerator

from formats.packed_data import score_next_tokens
from training.arguments import RunConfig


@dataclass
class StepResult:
    loss: torch.Tensor  # mean over the step's micro-batches, this process
    grad_norm: torch.Tensor


def train_step(model, batches, accumulation: int, config: RunConfig, accelerator: Accelerator) -> StepResult:
    """One optimizer step: `accumulation` micro-batches, gradients all-reduced on the last one only."""
    loss_sum = torch.zeros((), device=accelerator.device)
    for micro in range(accumulation):
        inputs, targets = next(batches)
        sync = micro == accumulation - 1
        with nullcontext() if sync else accelerator.no_sync(model):
            loss = score_next_tokens(model, inputs, targets).loss
            accelerator.backward(loss / accumulation)
        loss_sum += loss.detach()
    if config.optimization.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.optimization.max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                          if p.grad is not None]))
    return StepResult(loss_sum / accumulation, grad_norm)


class StepOutcome(NamedTuple):
    nonfinite: bool  # the loss, or (without a loss scaler) the gradients, not finite: no update
    preempted: bool  # a process was asked to stop: checkpoint and exit
    overflow: bool  # fp16: the gradients overflowed at this loss scale; the scaler skipped the step, lowered the scale


def finish_step(optimizer, result: StepResult, preemption_requested: bool, accelerator: Accelerator) -> StepOutcome:
    """Apply the update unless something is non-finite on any process.

    Under fp16 an overflow of the scaled gradients (the loss itself finite) is a normal event of dynamic
    loss scaling: the step still goes to the optimizer, whose scaler skips it and lowers the scale. The
    flags are agreed on by every process in one reduction, the step's only host sync.
    """
    loss_broken = (~torch.isfinite(result.loss)).float()
    gradients_broken = (~torch.isfinite(result.grad_norm)).float()
    flags = torch.stack([loss_broken, gradients_broken, torch.full_like(loss_broken, float(preemption_requested))])
    loss_bad, gradients_bad, preempted = (accelerator.reduce(flags, reduction="sum") > 0).tolist()
    scaled = accelerator.scaler is not None
    nonfinite = loss_bad or (gradients_bad and not scaled)
    if not nonfinite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutcome(nonfinite, preempted, overflow=scaled and gradients_bad and not loss_bad)

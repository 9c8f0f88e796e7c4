"""One optimizer step: accumulation over micro-batches, clipping, and the update agreed on by every process."""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from accelerate import Accelerator

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
            # labels and shift_labels both: stock transformers models then score the same aligned targets
            loss = model(input_ids=inputs, labels=targets, shift_labels=targets, use_cache=False).loss
            accelerator.backward(loss / accumulation)
        loss_sum += loss.detach()
    if config.optimization.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.optimization.max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                          if p.grad is not None]))
    return StepResult(loss_sum / accumulation, grad_norm)


def finish_step(optimizer, result: StepResult, preemption_requested: bool, accelerator: Accelerator):
    """Apply the update unless the loss or gradient norm is non-finite on any process; returns (nonfinite, preempted).

    The flags are agreed on by every process in one reduction, the step's only host sync.
    """
    broken = ((~torch.isfinite(result.loss)) | (~torch.isfinite(result.grad_norm))).float()
    flags = torch.stack([broken, torch.full_like(broken, float(preemption_requested))])  # no host-to-device copy
    nonfinite, preempted = (accelerator.reduce(flags, reduction="sum") > 0).tolist()
    if not nonfinite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return nonfinite, preempted

"""Evaluation: HellaSwag (in the loop and through lm-eval), validation loss against baselines, plots."""

from contextlib import contextmanager

import torch


@contextmanager
def evaluating(model, accelerator=None):
    """Eval mode, no gradients, and the accelerator's autocast (none without one) for the block; yields the
    device to put inputs on. The model's training flag is restored afterwards."""
    device = accelerator.device if accelerator else next(model.parameters()).device
    autocast = accelerator.autocast() if accelerator else torch.autocast(device.type, enabled=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast:
            yield device
    finally:
        model.train(was_training)

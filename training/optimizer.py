"""The optimizer and its learning-rate schedule."""

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from training.arguments import RunConfig


def build_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device):
    """AdamW with weight decay on 2-D weights only (matmuls and embeddings), and the cosine schedule."""
    o = config.optimization
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # Fused on CUDA: one kernel over all parameters, and the step counter is never read back to the host.
    # (On CPU the fused version measured 4% slower on the quick-start model.)
    optimizer = torch.optim.AdamW(groups, lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon,
                                  fused=device.type == "cuda")
    # Not passed through accelerator.prepare: a prepared scheduler steps once per process per step.
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=o.max_steps, min_lr_rate=o.min_lr_ratio
    )
    return optimizer, scheduler

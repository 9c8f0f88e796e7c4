"""The optimizers and their one learning-rate schedule.

`adamw` is the reproduction's: AdamW over every parameter, weight decay on the 2-D ones only.

`muon` keeps the architecture and changes the optimizer: `torch.optim.Muon` orthogonalizes the updates of
the matrices inside the blocks (`c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`), and AdamW trains the
rest: the embeddings (the tied head among them) and the vectors (biases, LayerNorms). Each group has its
own learning rate; one schedule scales them all alike. Muon's step is decoupled weight decay, momentum
with Nesterov, Newton-Schulz orthogonalization, then the learning rate adjusted for the matrix's shape:
`match_rms_adamw` (the default, from "Muon is Scalable for LLM Training") scales it by 0.2 * sqrt(max
dimension) so that the update's RMS matches AdamW's, which lets Muon reuse AdamW's learning rate and
weight decay; `original` scales by sqrt(max(1, rows / columns)).

The query, key and value projections are one `c_attn` matrix (3C x C, OpenAI's parameter). With
`muon_qkv: split` Muon sees them as three C x C matrices, through parameters that are views into that one
tensor, so the checkpoint keeps OpenAI's layout; `whole` orthogonalizes the stacked matrix.
"""

import math

import torch
from accelerate.utils import DistributedType
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule

from modeling_gpt2_scratch import CONV1D_WEIGHT_SUFFIXES
from training.arguments import ConfigError, RunConfig

# Muon trains the blocks' matrices (OpenAI's Conv1D weights, names ending so); every other parameter is AdamW's.
HIDDEN_MATRICES = CONV1D_WEIGHT_SUFFIXES
QKV_MATRIX = "attn.c_attn.weight"
MUON_MOMENTUM_START = 0.85  # where the momentum warm-up begins


def hidden_matrices(model) -> list[tuple[str, nn.Parameter]]:
    """The blocks' matmul weights, by name: what Muon trains, and what a token's FLOPs are counted over."""
    return [(name, p) for name, p in model.named_parameters() if name.endswith(HIDDEN_MATRICES)]


class Optimizers:
    """The run's optimizers (AdamW alone, or Muon and AdamW), stepped, zeroed and scheduled as one.

    Every param group carries a `name`; `learning_rates()` reports each group's current rate.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer], config: RunConfig,
                 split_matrices: list[tuple[nn.Parameter, list[nn.Parameter]]] = ()):
        self.optimizers = optimizers
        self.schedulers = [build_schedule(optimizer, config) for optimizer in optimizers]
        self.split_matrices = list(split_matrices)  # (whole c_attn weight, its q/k/v views for Muon)
        settings = config.optimization
        self.momentum_warmup_steps, self.momentum = settings.muon_momentum_warmup_steps, settings.muon_momentum
        self._set_muon_momentum()

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def prepare(self, model, accelerator):
        """Hands model and optimizers to Accelerate; the schedules are checkpointed with them."""
        if self.split_matrices and accelerator.distributed_type == DistributedType.FSDP:
            # FSDP2 swaps every parameter for a sharded DTensor: views into the old tensors would train nothing.
            raise ConfigError("muon_qkv: split needs whole parameters on each process (DDP or one process); "
                              "use muon_qkv: whole with FSDP")
        model, *self.optimizers = accelerator.prepare(model, *self.optimizers)
        for scheduler in self.schedulers:
            accelerator.register_for_checkpointing(scheduler)
        return model

    def step(self):
        for whole, parts in self.split_matrices:  # the views' gradients: the same slices of the whole's
            grads = whole.grad.chunk(len(parts)) if whole.grad is not None else [None] * len(parts)
            for part, grad in zip(parts, grads, strict=True):
                part.grad = grad
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)
        for whole, _ in self.split_matrices:  # in no optimizer: its gradient is zeroed here
            whole.grad = None

    def schedule_step(self):
        """After each optimizer step: the learning rates, and Muon's momentum while it warms up."""
        for scheduler in self.schedulers:
            scheduler.step()
        self._set_muon_momentum()

    def learning_rates(self) -> dict[str, float]:
        return {group["name"]: group["lr"] for group in self.param_groups}

    def _set_muon_momentum(self):
        if not self.momentum_warmup_steps:
            return
        done = min(1.0, self.schedulers[0].last_epoch / self.momentum_warmup_steps)
        for group in self.param_groups:
            if "momentum" in group:
                group["momentum"] = MUON_MOMENTUM_START + done * (self.momentum - MUON_MOMENTUM_START)


def build_schedule(optimizer: torch.optim.Optimizer, config: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """One schedule for every optimizer: linear warm-up, then cosine decay or warm-up-stable-decay.

    Not passed through accelerator.prepare: a prepared scheduler steps once per process per step.
    """
    settings = config.optimization
    if settings.lr_schedule == "wsd":
        decay_steps = math.ceil(settings.decay_fraction * settings.max_steps)
        return get_wsd_schedule(optimizer, num_warmup_steps=settings.warmup_steps, num_decay_steps=decay_steps,
                                num_training_steps=settings.max_steps, decay_type="linear",
                                min_lr_ratio=settings.min_lr_ratio)
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=settings.warmup_steps, num_training_steps=settings.max_steps,
        min_lr_rate=settings.min_lr_ratio,
    )


def build_optimizer(model: nn.Module, config: RunConfig, device: torch.device) -> Optimizers:
    settings = config.optimization
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    # Fused on CUDA: one kernel over all parameters, and the step counter is never read back to the host.
    # (On CPU the fused version measured 4% slower on the quick-start model.)
    adamw = dict(betas=(settings.adam_beta1, settings.adam_beta2), eps=settings.adam_epsilon,
                 fused=device.type == "cuda")
    vectors = {"name": "vectors", "params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}
    if settings.optimizer == "adamw":
        matrices = {"name": "matrices", "params": [p for _, p in named if p.dim() >= 2],
                    "weight_decay": settings.weight_decay}
        return Optimizers([torch.optim.AdamW([matrices, vectors], lr=settings.learning_rate, **adamw)], config)

    hidden = hidden_matrices(model)
    embeddings = [p for name, p in named if p.dim() >= 2 and not name.endswith(HIDDEN_MATRICES)]
    split = []
    if settings.muon_qkv == "split":
        split = [(p, qkv_views(p)) for name, p in hidden if name.endswith(QKV_MATRIX)]
        hidden = [(name, p) for name, p in hidden if not name.endswith(QKV_MATRIX)]
    muon_params = [p for _, p in hidden] + [view for _, views in split for view in views]
    muon = torch.optim.Muon(
        [{"name": "hidden_matrices", "params": muon_params}], lr=settings.muon_learning_rate,
        weight_decay=settings.weight_decay,
        momentum=settings.muon_momentum, nesterov=True, adjust_lr_fn=settings.muon_adjust_lr,
    )
    embedding_lr = settings.embedding_learning_rate or settings.learning_rate
    others = torch.optim.AdamW(
        [{"name": "embeddings", "params": embeddings, "weight_decay": settings.weight_decay, "lr": embedding_lr},
         vectors],
        lr=settings.learning_rate, **adamw,
    )
    return Optimizers([muon, others], config, split)


def qkv_views(qkv: nn.Parameter) -> list[nn.Parameter]:
    """Query, key and value matrices as three parameters sharing `qkv`'s storage: updates land in `qkv`."""
    return [nn.Parameter(part) for part in qkv.data.chunk(3, dim=0)]

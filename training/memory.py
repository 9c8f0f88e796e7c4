"""Device memory: the largest micro-batch that fits, running out of memory said on one line, and an estimate.

- `find_micro_batch`: `--micro_batch_size auto` as the largest micro-batch that runs a full forward,
  backward and optimizer step, searched with Accelerate's `find_executable_batch_size` (which also
  recognises the out-of-memory errors), every process agreeing on the smallest.
- `memory_estimate`: what a step should hold at its peak, by part, for start-up's report.
"""

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import find_executable_batch_size

from formats.packed_data import inputs_and_targets, score_next_tokens
from training.optimizer import hidden_matrices


class OutOfMemory(Exception):
    """A step that does not fit the device, reported on one line with what to change."""


def micro_batch_candidates(rows_per_process: int) -> list[int]:
    """The micro-batches that divide one step's rows on a process, largest first: the search starts with the
    largest (no accumulation) and halves, down to the next size that still divides the step."""
    candidates, size = [], rows_per_process
    while size >= 1:
        fitting = max(d for d in range(1, size + 1) if rows_per_process % d == 0)
        candidates.append(fitting)
        size = fitting // 2
    return candidates


def probe_step(model, optimizers, accelerator: Accelerator, micro_batch: int, block_size: int, vocab_size: int):
    """One forward, backward and optimizer step at this micro-batch on random tokens; the model, the optimizer
    states and the random generators are as they were afterwards."""
    weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            inputs, targets = inputs_and_targets(torch.randint(0, vocab_size, (micro_batch, block_size + 1),
                                                               device=accelerator.device))
            with accelerator.autocast():
                loss = score_next_tokens(model, inputs, targets).loss
            loss.backward()
            del loss, inputs, targets
            optimizers.step()
    finally:
        optimizers.zero_grad(set_to_none=True)
        for optimizer in optimizers.optimizers:
            optimizer.state.clear()  # moments are created again, from zero, at the first real step
        model.load_state_dict(weights)


def find_micro_batch(model, optimizers, accelerator: Accelerator, rows_per_process: int, block_size: int,
                     vocab_size: int) -> int:
    """The largest micro-batch that every process can step, searched before training (memory freed after)."""
    candidates = iter(micro_batch_candidates(rows_per_process))
    first = next(candidates)

    @find_executable_batch_size(starting_batch_size=first, reduce_batch_size_fn=lambda: next(candidates, 0))
    def largest_fitting(micro_batch: int) -> int:
        probe_step(model, optimizers, accelerator, micro_batch, block_size, vocab_size)
        return micro_batch

    try:
        fits = largest_fitting()
    except RuntimeError as error:
        if "No executable batch size found" not in str(error):
            raise
        raise OutOfMemory(f"not even a micro-batch of 1 x {block_size} fits a step on {accelerator.device}: "
                          "use a smaller model, a shorter block size, or --gradient_checkpointing true") from None
    finally:
        if accelerator.device.type == "cuda":
            torch.cuda.empty_cache()
    return int(accelerator.gather(torch.tensor([fits], device=accelerator.device)).min().item())


def out_of_memory_message(micro_batch: int, block_size: int, device: torch.device) -> str:
    smaller = f" or a smaller one such as --micro_batch_size {micro_batch // 2}" if micro_batch > 1 else ""
    return (f"out of memory at micro-batch {micro_batch} x {block_size} on {device}: pass --micro_batch_size auto"
            f"{smaller} (gradient accumulation keeps the tokens per step), or --gradient_checkpointing true")


@dataclass
class MemoryEstimate:
    """Bytes a training step holds at its peak, by part (an estimate, before compile's fusions)."""

    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def checkpoint_bytes(model, optimizer: str) -> int:
    """What one checkpoint holds: the fp32 weights and the optimizer's state, as `memory_estimate` counts them
    (AdamW's two moments; Muon's one for the blocks' matrices)."""
    estimate = memory_estimate(model, optimizer, micro_batch=1, block_size=1, precision="no")
    return estimate.weights + estimate.optimizer


def memory_estimate(model, optimizer: str, micro_batch: int, block_size: int, precision: str,
                    gradient_checkpointing: bool = False) -> MemoryEstimate:
    """fp32 weights and gradients; AdamW's two moments (Muon keeps one for the blocks' matrices, the parameters
    `training.optimizer` gives it); activations in 16-bit with flash attention, after Korthikanti et al. 2022:
    per token and layer, 18 x width (attention's 11, the LayerNorms' 4, the MLP's input and dropout mask 3)
    plus 4 x the MLP's width (the activation's input and output), so 34 x width for the usual 4x MLP; twice
    that in fp32, one layer's worth with gradient checkpointing; plus the fused loss's one chunk of logits.
    Parameters are counted from the model itself, each once (the tied head is the embedding)."""
    c = model.config
    parameters = sum(p.numel() for p in model.parameters())
    muon_matrices = sum(p.numel() for _, p in hidden_matrices(model))
    optimizer_bytes = 8 * parameters if optimizer == "adamw" else 4 * muon_matrices + 8 * (parameters - muon_matrices)
    per_token_layer = 18 * c.n_embd + 4 * c.intermediate_size
    per_layer = per_token_layer * micro_batch * block_size * (1 if precision in ("bf16", "fp16") else 2)
    kept_layers = 1 if gradient_checkpointing else c.n_layer
    logits_chunk = 4 * c.loss_chunk_tokens * c.padded_vocab_size  # float32, over the padded head's rows
    return MemoryEstimate(weights=4 * parameters, gradients=4 * parameters, optimizer=optimizer_bytes,
                          activations=per_layer * kept_layers + logits_chunk)

"""Evaluation inside the loop: validation loss, samples through `generate`, HellaSwag."""

import numpy as np
import torch
from accelerate import Accelerator

from eval import evaluating, hellaswag
from eval.val_loss import row_batches, validation_loss, validation_rows
from training.arguments import RunConfig
from training.data import TrainingData


def evaluate_loss(model, data: TrainingData, config: RunConfig, accelerator: Accelerator, batch_size: int,
                  on_batch=None) -> float:
    """Mean loss over the first `eval_tokens` validation tokens, the same rows for any number of processes, in
    batches of `batch_size` rows; `on_batch()` is called as each batch is taken (the stall watchdog's progress)."""
    rows = validation_rows(len(data.validation), config.evaluation.eval_tokens, data.block_size)
    mine = np.arange(accelerator.process_index, rows, accelerator.num_processes)
    batches = row_batches(data.validation.rows, mine, batch_size)
    return validation_loss(model, calling_back(batches, on_batch), accelerator)


def calling_back(items, callback=None):
    for item in items:
        if callback is not None:
            callback()
        yield item


def eager_module(model, accelerator: Accelerator) -> torch.nn.Module:
    """The model without DDP and without torch.compile: variable shapes (generation, HellaSwag batches) would
    recompile, and a compiled module's state dict names every tensor `_orig_mod.<name>`."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def generate_samples(model, tokenizer, config: RunConfig, accelerator: Accelerator, step: int) -> list[str]:
    """Top-k 50 continuations of the prompt through the model's own `generate`, seeded by the step."""
    unwrapped = eager_module(model, accelerator)
    prompt = tokenizer(config.evaluation.sample_prompt, return_tensors="pt").input_ids.to(accelerator.device)
    prompt = prompt.repeat(config.evaluation.num_samples, 1)
    with (torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []),
          evaluating(unwrapped, accelerator)):
        torch.manual_seed(config.data.seed + step)
        out = unwrapped.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=50,
                                 max_new_tokens=config.evaluation.sample_tokens, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def evaluate_hellaswag(model, data: TrainingData, accelerator: Accelerator, batch_size: int, on_batch=None) -> dict:
    return hellaswag.evaluate_model(eager_module(model, accelerator), data.tokenizer, data.hellaswag,
                                    accelerator=accelerator, batch_size=batch_size, on_batch=on_batch)

"""Stage 5: HellaSwag scoring speed, and what HellaSwag's 10,042 validation examples would take."""

import time

import torch

from benchmarks.preflight.report import hellaswag_figures
from benchmarks.preflight.runner import Stage
from configuration import GPT2ScratchConfig
from eval import hellaswag
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from preparation.tokenizer import tokenizer_from_source
from training.measurement import available_device, synchronize


def run(stage: Stage) -> dict:
    plan, device = stage.plan, available_device()
    tokenizer = tokenizer_from_source(stage.sources.tokenizer)
    examples = hellaswag.load_examples(stage.sources.hellaswag, limit=plan.hellaswag_examples)
    torch.manual_seed(0)
    config = GPT2ScratchConfig(vocab_size=len(tokenizer), n_positions=1024, **plan.model)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # what `python -m eval.hellaswag` loads
    model = GPT2ScratchForCausalLM(config).to(device=device, dtype=dtype)
    record = {"examples": len(examples), "dtype": str(dtype).removeprefix("torch."), "by_batch_size": {}}
    for batch_size in plan.hellaswag_batch_sizes:
        hellaswag.evaluate_model(model, tokenizer, examples[:batch_size], batch_size=batch_size)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        scores = hellaswag.evaluate_model(model, tokenizer, examples, batch_size=batch_size)
        synchronize(device)
        seconds = time.perf_counter() - start
        rate = len(examples) / seconds
        record["by_batch_size"][batch_size] = {
            "seconds": seconds, "examples_per_second": rate, **scores,
            "extrapolated_seconds_for_validation": hellaswag.VALIDATION_EXAMPLES / rate,
        }
        stage.keep(record)
    return {**record, "figures": hellaswag_figures(record)}

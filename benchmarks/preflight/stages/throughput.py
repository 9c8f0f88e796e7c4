"""Stage 3: the training step at the recipe's micro-batch, compiled, ours then stock: tokens/s, MFU against stage
1's measured peak, peak memory, host syncs per step; then ours at the 40 GB card's micro-batch."""

import torch

from benchmarks.preflight.plans import MEMORY_GOAL_BYTES, Plan
from benchmarks.preflight.report import throughput_figures
from benchmarks.preflight.runner import Stage
from benchmarks.throughput import ThroughputSettings, measure
from configuration import GPT2ScratchConfig
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.measurement import flops_per_token, mfu


def run(stage: Stage) -> dict:
    plan, peak = stage.plan, stage.measured_peak()
    record = {"shape": f"{plan.micro_batch} x {plan.seq_len}", "results": {}}
    for model in ("ours", "stock"):  # one at a time, each kept before the next compiles
        report = measure_step(plan, plan.micro_batch, 1, model)
        result, record["setting"] = report["results"][0], report["setting"]
        if "error" in result:  # out of memory: the same tokens per step in two micro-batches
            retry = measure_step(plan, plan.micro_batch // 2, 2, model)["results"][0]
            result = {**retry, "shape": f"{plan.micro_batch // 2} x {plan.seq_len} x 2",
                      "at_full_micro_batch": result["error"]}
        else:
            result["shape"] = record["shape"]
        record["results"][model] = with_mfu(result, plan, peak)
        stage.keep({**record, "figures": throughput_figures(record, plan)})
    speeds = [record["results"][name].get("tokens_per_second") for name in ("ours", "stock")]
    if all(speeds):
        record["ratio_ours_over_stock"] = speeds[0] / speeds[1]
    memory = measure_step(plan, plan.memory_micro_batch, 1, "ours", profile=False)["results"][0]
    record["memory_at_small_micro_batch"] = memory
    reserved = memory.get("peak_reserved_gib")
    record["within_40gb_goal"] = reserved * 2**30 <= MEMORY_GOAL_BYTES if reserved is not None else None
    return {**record, "figures": throughput_figures(record, plan)}


def measure_step(plan: Plan, micro_batch: int, accumulation: int, model: str, optimizer: str = "adamw",
                 profile: bool = True) -> dict:
    """benchmarks/throughput.py's measurement of one model at this shape, bf16."""
    settings = dict(plan.throughput, seq_len=plan.seq_len, vocab=plan.vocab, micro_batch=micro_batch,
                    accumulation=accumulation, models=(model,), mixed_precision="bf16", optimizer=optimizer,
                    muon_qkv="split")
    if not profile:
        settings["profile_steps"] = 0
    return measure(ThroughputSettings(**settings))


def with_mfu(result: dict, plan: Plan, peak: float | None) -> dict:
    """MFU against stage 1's measured matmul peak (throughput.py's own figure measures a shorter run)."""
    if "tokens_per_second" not in result or not peak:
        return result
    return {**result, "mfu_vs_stage1_peak": mfu(result["tokens_per_second"], plan_flops_per_token(plan), peak)}


def plan_flops_per_token(plan: Plan) -> float:
    with torch.device("meta"):  # the parameters' shapes are all the count needs
        model = GPT2ScratchForCausalLM(GPT2ScratchConfig(vocab_size=plan.vocab, n_positions=plan.seq_len, **plan.model))
    return flops_per_token(model, plan.seq_len)

"""Stage 4: the training step with Muon, its cost against AdamW's (stage 3's measurement when it has one)."""

from benchmarks.preflight.report import muon_figures
from benchmarks.preflight.runner import Stage
from benchmarks.preflight.stages.throughput import measure_step


def run(stage: Stage) -> dict:
    plan = stage.plan
    earlier = (stage.earlier("throughput") or {}).get("results", {}).get("ours", {})
    shape = (plan.micro_batch, 1)
    if earlier.get("at_full_micro_batch"):  # ours ran out of memory at the full micro-batch in stage 3
        shape = (plan.micro_batch // 2, 2)
    if "tokens_per_second" in earlier:
        adamw, source = earlier, "stage 3 (throughput)"
    else:
        adamw, source = measure_step(plan, *shape, "ours", profile=False)["results"][0], "measured here"
    stage.keep({"adamw": adamw, "adamw_from": source})
    muon = measure_step(plan, *shape, "ours", optimizer="muon", profile=False)["results"][0]
    record = {"shape": f"{shape[0]} x {plan.seq_len} x {shape[1]}", "adamw": adamw, "adamw_from": source,
              "muon": muon}
    if "tokens_per_second" in adamw and "tokens_per_second" in muon:
        record["muon_over_adamw_tokens_per_second"] = muon["tokens_per_second"] / adamw["tokens_per_second"]
    return {**record, "figures": muon_figures(record)}

"""The pre-flight check's report: each stage's figures as rows (one function a stage), and `summary.json` and
`summary.md`, a table of every stage and every figure."""

import json
from pathlib import Path

from benchmarks.preflight.plans import Plan


def write_summary(records: dict[str, dict], plan: Plan, seconds: float, command: str, output: Path) -> dict:
    """The stages' outcomes and figures, as JSON and as Markdown (printed too)."""
    lines = [f"Pre-flight check ({plan.name}), {seconds:.0f} s in all: `{command}`", "",
             "| stage | result | seconds (budget) |", "| --- | --- | --- |"]
    for stage, record in records.items():
        result = "ok" if record["ok"] else f"failed: {record.get('error', 'see its JSON')}"
        lines.append(f"| {stage} | {result} | {record['seconds']:.0f} ({plan.budgets[stage]}) |")
    lines += ["", "| figure | value |", "| --- | --- |"]
    for record in records.values():
        lines += [f"| {name} | {value} |" for name, value in record.get("figures", {}).items()]
    summary = {"plan": plan.name, "seconds": seconds, "stages_ok": {s: r["ok"] for s, r in records.items()},
               "figures": {name: value for r in records.values() for name, value in r.get("figures", {}).items()},
               "markdown": "\n".join(lines) + "\n"}
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (output / "summary.md").write_text(summary["markdown"])
    print(summary["markdown"])
    return summary


# --- each stage's figures: the rows it adds to the report ---

def correctness_figures(record: dict, plan: Plan) -> dict:
    checks, attention, compiled = record["checks"], record["attention"], record["compiled_against_eager"]
    own, gap = record["bf16_own_error"]["logits"], record["bf16_gap_ours_stock"]["logits"]
    figures = {
        "correctness checks": f"{sum(checks.values())} of {len(checks)} passed"
                              + "".join(f"; FAILED: {name}" for name, ok in checks.items() if not ok),
        "bf16 logits RMS error, ours / stock / gap": f"{own['ours']:.2e} / {own['stock']:.2e} / {gap:.2e}",
        "attention kernel": ", ".join(attention["backend"]) + (f" ({attention['why_not_flash']})"
                                                               if attention.get("why_not_flash") else ""),
        "compiled vs eager loss, largest relative gap": f"{compiled['max_relative_gap']:.1e} over "
                                                        f"{len(compiled['eager'])} steps ({compiled['backend']})",
    }
    memory = record["fused_loss_memory"]
    if memory is not None:
        figures["loss peak memory, fused vs full logits"] = (
            f"{memory['fused_peak_gib']:.2f} vs {memory['full_logits_peak_gib']:.2f} GiB "
            f"({plan.correctness_batch} x {plan.seq_len})")
    return figures


def throughput_line(result: dict) -> str:
    if "tokens_per_second" not in result:
        return result.get("error", "not measured")
    parts = [f"{result['tokens_per_second']:,.0f} tokens/s"]
    if result.get("mfu_vs_stage1_peak") is not None:
        parts.append(f"MFU {result['mfu_vs_stage1_peak']:.1%} of measured, "
                     f"{result['mfu_vs_datasheet']:.1%} of data sheet" if result.get("mfu_vs_datasheet")
                     else f"MFU {result['mfu_vs_stage1_peak']:.1%} of measured")
    if result.get("peak_reserved_gib") is not None:
        parts.append(f"{result['peak_reserved_gib']:.1f} GiB reserved")
    return ", ".join(parts)


def throughput_figures(record: dict, plan: Plan) -> dict:
    figures = {}
    for name, result in record["results"].items():
        figures[f"{name}: tokens/s, MFU, peak reserved ({result.get('shape')})"] = throughput_line(result)
        syncs = result.get("cuda_syncs_per_step", result.get("host_reads_in_train_step"))
        if syncs is not None:
            figures[f"{name}: host syncs per step"] = str(syncs)
    if "ratio_ours_over_stock" in record:
        figures["ratio ours / stock"] = f"{record['ratio_ours_over_stock']:.2f}"
    if "memory_at_small_micro_batch" in record:
        memory = record["memory_at_small_micro_batch"]
        reserved = memory.get("peak_reserved_gib")
        figures[f"ours at {plan.memory_micro_batch} x {plan.seq_len}: peak reserved"] = (
            f"{reserved:.1f} GiB ({reserved * 2**30 / 1e9:.1f} GB; goal 40 GB)" if reserved is not None
            else memory.get("error", "not measured on CPU"))
    return figures


def muon_figures(record: dict) -> dict:
    ratio = record.get("muon_over_adamw_tokens_per_second")
    return {f"Muon (split QKV): tokens/s ({record['shape']})": throughput_line(record["muon"]),
            "Muon / AdamW tokens/s": f"{ratio:.3f}" if ratio is not None else "not measured"}


def hellaswag_figures(record: dict) -> dict:
    from eval.hellaswag import VALIDATION_EXAMPLES

    return {f"HellaSwag, batch {size}: examples/s (-> {VALIDATION_EXAMPLES:,} examples)":
            f"{r['examples_per_second']:,.0f} (-> {r['extrapolated_seconds_for_validation']:.0f} s)"
            for size, r in record["by_batch_size"].items()}


def setup_line(setup: dict) -> str:
    if not setup:
        return "not logged"
    return (f"{setup['precision']}, attention {setup['attention']}, estimated peak "
            f"{setup['estimated_peak_bytes'] / 2**30:.1f} GiB of {setup['device_bytes'] / 2**30:.1f} GiB")


def recipe_figures(record: dict) -> dict:
    mfu = f", MFU {record['mfu_vs_stage1_peak']:.1%} of measured" if record.get("mfu_vs_stage1_peak") else ""
    tokens = f"{record['tokens_per_second']:,.0f} tokens/s" if record["tokens_per_second"] else "no throughput logged"
    auto = record["auto_setup"]
    return {
        f"recipe: loop tokens/s after the first log window ({record['steps']} steps)": tokens + mfu,
        "recipe: whole path (prepare, train, eval, HellaSwag, samples, checkpoints, final GPT-2)":
            "works" if record["ok"] else f"FAILED (exit {record['exit_code']}, missing {record['missing_outputs']})",
        "recipe: prepare / train wall time": f"{record['prepare_seconds']:.0f} s / {record['train_seconds']:.0f} s",
        "recipe: --mixed_precision auto chose": setup_line(record["setup"]),
        "recipe: --micro_batch_size auto chose": f"{auto['micro_batch_size']} x accumulation {auto['accumulation']}"
        if auto else f"not logged (exit {record['auto_exit_code']})",
    }

"""The pre-flight check's report: `summary.json` and `summary.md`, a table of every stage and every figure."""

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

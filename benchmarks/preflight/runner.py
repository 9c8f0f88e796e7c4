"""The stage runner: each stage is a function with a time budget, run in a child process of its own, leaving one
JSON record whatever happens (a hang, an out-of-memory or a CUDA error that poisons a process cannot take the
later stages with it). A stage may use what earlier stages left of their budgets, never a later stage's share."""

import collections
import json
import os
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.preflight.plans import STAGES, Plan
from benchmarks.preflight.sources import Sources

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    """What a stage's function is given: the plan, where records go, where its inputs come from."""

    name: str
    plan: Plan
    output: Path
    sources: Sources

    def keep(self, partial: dict):
        """Save what the stage has measured so far: killed at its time limit, it still leaves that."""
        write_record(self.output, self.name, {"stage": self.name, "ok": False, "partial": True, **partial})

    def earlier(self, name: str) -> dict | None:
        """An earlier stage's record, if it left one."""
        return read_record(self.output, name)

    def measured_peak(self) -> float | None:
        """Stage 1's measured bf16 matmul FLOP/s, if it finished."""
        return (self.earlier("environment") or {}).get("measured_bf16_matmul_flops")


def read_record(output: Path, stage: str) -> dict | None:
    path = output / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_record(output: Path, stage: str, record: dict):
    """Whole or absent: a stage killed while writing leaves no half a file."""
    path = output / f"{stage}.json"
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(record, indent=2, default=str) + "\n")
    staging.replace(path)


def run_stage_here(stage: str, function: Callable[[Stage], dict], plan: Plan, output: Path, sources: Sources) -> int:
    """In the child process: one stage, its record written whatever happens."""
    started = time.perf_counter()
    try:
        record = {"stage": stage, "ok": True, **function(Stage(stage, plan, output, sources))}
    except Exception as error:
        traceback.print_exc()
        record = {"stage": stage, "ok": False, "error": f"{type(error).__name__}: {error}".splitlines()[0],
                  "traceback": traceback.format_exc()[-4000:]}
    record["seconds"] = time.perf_counter() - started
    write_record(output, stage, record)
    return 0 if record["ok"] else 1


def run_child(stage: str, command: list[str], timeout: float, output: Path, tail_lines: int = 40) -> dict:
    """A stage's child process, its output echoed with the stage's name; killed (its whole process group)
    at `timeout`. Returns its record, or one that says how it ended when the child wrote none."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace", start_new_session=True)
    tail = collections.deque(maxlen=tail_lines)

    def echo():
        for line in child.stdout:
            tail.append(line.rstrip())
            print(f"[{stage}] {line}", end="", flush=True)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        child.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        timed_out = True
    reader.join(timeout=5)
    record = read_record(output, stage) or {"stage": stage, "ok": False, "partial": True}
    if timed_out or record.get("partial"):  # what it kept, if anything, and how it ended
        how = f"timed out after {timeout:.0f} s" if timed_out else f"exited with {child.returncode} before the end"
        record.update(ok=False, error=how, seconds=time.perf_counter() - started)
    if not record["ok"]:
        record["output_tail"] = list(tail)
        write_record(output, stage, record)
    return record


def run_all(plan: Plan, output: Path, stage_command: Callable[[str], list[str]]) -> tuple[dict[str, dict], float]:
    """Every stage in order, each in the child process `stage_command(stage)` starts, bounded so that the later
    stages keep their budgets; returns each stage's record, and the seconds they took together."""
    output.mkdir(parents=True, exist_ok=True)
    for stage in (*STAGES, "summary"):
        (output / f"{stage}.json").unlink(missing_ok=True)
    started = time.perf_counter()
    records = {}
    for index, stage in enumerate(STAGES):
        later = sum(plan.budgets[name] for name in STAGES[index + 1 :])
        timeout = max(5.0, plan.total_seconds - (time.perf_counter() - started) - later)
        print(f"== {stage}: up to {timeout:.0f} s", flush=True)
        records[stage] = run_child(stage, stage_command(stage), timeout, output)
        status = "ok" if records[stage]["ok"] else f"FAILED: {records[stage].get('error')}"
        print(f"== {stage}: {status} ({records[stage]['seconds']:.1f} s)", flush=True)
    return records, time.perf_counter() - started

"""benchmarks/gpu_check.py: the smoke run of every stage, and how a stage that fails or overruns is recorded."""

import json
import math
import os
import subprocess
import sys

import pytest
from support.hub import HubStandIn
from support.paths import REPO_ROOT

from benchmarks import gpu_check
from benchmarks.preflight import plans, runner
from benchmarks.preflight.sources import hub_sources
from eval.parity import FP32_RTOL
from formats.packed_data import FINEWEB_EDU


def finite_numbers(value):
    """Every number inside a record (bools are verdicts, not figures)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from finite_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from finite_numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.mark.slow
def test_smoke_run_needs_no_files_passes_every_stage_and_leaves_its_json(fineweb_hub, tmp_path):
    """The issue's command on a fresh clone with a hub, offline here: the stand-in serves GPT-2's tokenizer,
    HellaSwag's validation split and FineWeb-Edu's first sample file."""
    with HubStandIn(fineweb_hub.root) as hub:
        command = ["benchmarks/gpu_check.py", "--output", str(tmp_path / "out"), "--smoke"]
        done = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=600, env={**os.environ, **hub.environment(tmp_path / "home")})
        fetched = {(r.repo_id, r.path) for r in hub.requests if r.method == "GET" and r.status == 200}
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("Pre-flight check (smoke, up to 320 s); inputs from the hub: "
                                                  "tokenizer openai-community/gpt2, HellaSwag validation")
    assert {(FINEWEB_EDU, "sample/10BT/000_00000.parquet"), ("openai-community/gpt2", "tokenizer.json"),
            ("Rowan/hellaswag", "data/validation-00000-of-00001.parquet")} <= fetched
    tmp_path = tmp_path / "out"
    records = {stage: json.loads((tmp_path / f"{stage}.json").read_text()) for stage in plans.STAGES}
    for stage, record in records.items():
        assert record["stage"] == stage and record["ok"] is True and "partial" not in record, record.get("error")
        assert record["figures"] and record["seconds"] > 0
        assert all(math.isfinite(number) for number in finite_numbers(record)), stage

    correctness = records["correctness"]
    assert correctness["passed"] and len(correctness["checks"]) == 6 and all(correctness["checks"].values())
    assert correctness["attention"]["backend"] == ["flash"]  # CPU SDPA's fused kernel, as on the GPU
    assert correctness["fp32_gap"]["logits"] < FP32_RTOL
    # bf16 really rounded: an error of zero would mean autocast never ran
    assert correctness["bf16_own_error"]["logits"]["ours"] > 1e-4
    assert records["environment"]["sdpa_kernels_that_run"]["math"] is True
    assert records["environment"]["measured_bf16_matmul_flops"] > 0
    throughput = records["throughput"]
    assert set(throughput["results"]) == {"ours", "stock"} and throughput["ratio_ours_over_stock"] > 0
    assert throughput["results"]["ours"]["host_reads_in_train_step"] == 0
    muon = records["muon"]
    assert muon["muon"]["model"] == "ours" and muon["adamw_from"] == "stage 3 (throughput)"
    assert muon["adamw"] == throughput["results"]["ours"]  # stage 3's measurement, read from its file
    assert 0 < muon["muon_over_adamw_tokens_per_second"] < 2
    hellaswag = records["hellaswag"]["by_batch_size"]["4"]
    assert hellaswag["examples"] == 8 and 0 <= hellaswag["acc_norm"] <= 1
    # timed inside the stage, whose own clock (the runner's) ran longer; 10,042 examples take longer than 8
    assert hellaswag["seconds"] < records["hellaswag"]["seconds"] < hellaswag["extrapolated_seconds_for_validation"]
    recipe = records["recipe"]
    assert recipe["exit_code"] == 0 and recipe["missing_outputs"] == []
    assert recipe["logged"]["train"] == 4 and recipe["logged"]["eval"] == 2 and recipe["logged"]["hellaswag"] == 1
    assert len(recipe["samples"]) == 4 and recipe["tokens_per_second"] > 0
    # what auto chose on this CPU: no mixed precision; all 8 rows of a step at once (they fit)
    assert recipe["setup"]["precision"] == "no" and recipe["auto_exit_code"] == 0
    assert (recipe["auto_setup"]["micro_batch_size"], recipe["auto_setup"]["accumulation"]) == (8, 1)

    summary = (tmp_path / "summary.md").read_text()
    assert all(f"| {stage} | ok |" in summary for stage in plans.STAGES)
    assert "| correctness checks | 6 of 6 passed |" in summary
    assert json.loads((tmp_path / "summary.json").read_text())["stages_ok"] == dict.fromkeys(plans.STAGES, True)
    assert len(list(tmp_path.iterdir())) == 8  # the stages' JSON and the summary: nothing else to bring back


def test_a_failing_stage_is_recorded_with_its_output(tmp_path):
    command = [sys.executable, "-c", "print('loading'); raise SystemExit(3)"]
    record = runner.run_child("muon", command, timeout=60, output=tmp_path)
    assert record["ok"] is False and record["error"] == "exited with 3 before the end"
    assert record["output_tail"] == ["loading"]
    assert json.loads((tmp_path / "muon.json").read_text())["error"] == record["error"]


def test_a_stage_past_its_time_is_killed_and_keeps_what_it_measured(tmp_path):
    stage = runner.Stage("throughput", plans.smoke_plan(), tmp_path, hub_sources())
    script = ("import time, sys; from pathlib import Path; from benchmarks.preflight import plans, runner, sources; "
              f"runner.Stage('throughput', plans.smoke_plan(), Path({str(tmp_path)!r}), sources.hub_sources())"
              ".keep({'results': {'ours': {'tokens_per_second': 123.0}}}); print('kept', flush=True); time.sleep(60)")
    record = runner.run_child(stage.name, [sys.executable, "-c", script], timeout=8, output=tmp_path)
    assert record["ok"] is False and record["error"] == "timed out after 8 s" and record["seconds"] < 30
    assert record["results"] == {"ours": {"tokens_per_second": 123.0}} and record["output_tail"] == ["kept"]


def test_stage_budgets_fit_six_minutes_and_each_stage_has_one():
    plan = plans.gpu_plan()
    assert set(plan.budgets) == set(plans.STAGES) and plan.total_seconds <= 360


def test_a_data_folder_that_lacks_an_input_is_one_line_before_any_stage_runs(tmp_path, capsys):
    (tmp_path / "gpt2.tiktoken").write_text("")
    assert gpu_check.main(["--data", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"gpu_check.py: error: {tmp_path} lacks one *.jsonl in HellaSwag's schema; "
                                       "*.txt files, in it or below it (the text the recipe trains on) (see --help)\n")
    assert not (tmp_path / "out").exists()

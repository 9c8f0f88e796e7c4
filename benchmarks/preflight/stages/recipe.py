"""Stage 6: `prepare_data.py` on the check's text, then `configs/gpt2_124m_fineweb_edu.yaml` for a few steps with
evaluation, HellaSwag, samples, checkpoints and the final model; what `--mixed_precision auto` and
`--micro_batch_size auto` choose on this device."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.preflight.plans import Plan
from benchmarks.preflight.report import recipe_figures
from benchmarks.preflight.runner import REPO_ROOT, Stage
from eval import hellaswag
from formats.packed_data import read_metadata
from formats.run_log import LOG_FILE, read_log
from training.checkpoints import checkpoint_dir
from training.final_model import final_model_dir
from training.measurement import flops_per_token, mfu


def run(stage: Stage) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu_check_recipe_") as work:  # data, checkpoints: gone afterwards
        return run_in(stage, Path(work))


def run_in(stage: Stage, work: Path) -> dict:
    plan = stage.plan
    data_dir, run_dir = work / "data", work / "run"
    cores = str(min(8, os.cpu_count() or 1))
    prepare = [sys.executable, "prepare_data.py", *stage.sources.prepare_flags, "--num_proc", cores,
               "--output_dir", str(data_dir), *plan.recipe_prepare_flags]
    started = time.perf_counter()
    subprocess.run(prepare, cwd=REPO_ROOT, check=True)
    prepared = time.perf_counter()
    stage.keep({"prepare_seconds": prepared - started})
    steps, half = plan.recipe_steps, plan.recipe_steps // 2
    recipe = [sys.executable, "run_pretrain.py", "configs/gpt2_124m_fineweb_edu.yaml", "--data_dir", str(data_dir),
              "--report_to", "none", *plan.recipe_flags]
    # The recipe's own micro-batch, whose compiled graph the throughput stage left in inductor's cache.
    train = [*recipe, "--output_dir", str(run_dir), "--max_steps", str(steps), "--warmup_steps", str(half),
             "--log_every", str(max(1, steps // 4)), "--eval_every", str(half), "--sample_every", str(half),
             "--save_every", str(half), "--hellaswag_every", str(steps),
             *hellaswag_flags(stage, plan, work), *plan.recipe_evaluation_flags]
    exit_code = subprocess.run(train, cwd=REPO_ROOT).returncode
    finished = time.perf_counter()
    # What --micro_batch_size auto finds on this device: the search and one eager step, nothing saved.
    search = [*recipe, "--output_dir", str(work / "auto"), "--micro_batch_size", "auto", "--max_steps", "1",
              "--warmup_steps", "0", "--compile", "false", "--eval_every", "-1", "--sample_every", "-1",
              "--save_every", "-1", "--hellaswag_every", "-1", "--log_every", "-1"]
    auto_exit = subprocess.run(search, cwd=REPO_ROOT).returncode
    auto_log = read_log(work / "auto" / LOG_FILE) if (work / "auto" / LOG_FILE).exists() else {}
    log = read_log(run_dir / LOG_FILE) if (run_dir / LOG_FILE).exists() else {}
    windows = log.get("train", [])[1:]  # the first window holds the compilation
    expected = [checkpoint_dir(run_dir, half), checkpoint_dir(run_dir, steps)] + [
        final_model_dir(run_dir) / name for name in ("config.json", "model.safetensors")]
    record = {
        "exit_code": exit_code, "prepare_seconds": prepared - started, "train_seconds": finished - prepared,
        "steps": steps, "missing_outputs": [str(path.relative_to(run_dir)) for path in expected if not path.exists()],
        "logged": {kind: len(records) for kind, records in log.items()},
        "tokens_per_second": median_of(windows, "tokens_per_second"), "mfu_vs_datasheet": median_of(windows, "mfu"),
        "val_loss": [r["val_loss"] for r in log.get("eval", [])],
        "hellaswag": log.get("hellaswag", [{}])[-1].get("acc_norm"),
        "samples": (log.get("samples") or [{}])[-1].get("samples"),
        "setup": (log.get("setup") or [{}])[0],  # what --mixed_precision auto chose for the recipe
        "auto_exit_code": auto_exit, "auto_setup": (auto_log.get("setup") or [{}])[0],  # and the micro-batch search
    }
    peak, tokens_per_second = stage.measured_peak(), record["tokens_per_second"]
    if peak and tokens_per_second and not record["missing_outputs"]:
        record["mfu_vs_stage1_peak"] = mfu(tokens_per_second, trained_flops_per_token(run_dir, data_dir), peak)
    record["ok"] = exit_code == 0 == auto_exit and not record["missing_outputs"] and all(
        record["logged"].get(kind) for kind in ("train", "eval", "hellaswag", "samples"))
    return {**record, "figures": recipe_figures(record)}


def hellaswag_flags(stage: Stage, plan: Plan, work: Path) -> list[str]:
    """The loop scores a whole file, or HellaSwag's validation split from the hub: a shorter file when the plan
    takes fewer examples."""
    if not plan.hellaswag_examples:
        return ["--hellaswag_file", stage.sources.hellaswag] if stage.sources.hellaswag else []
    examples = hellaswag.load_examples(stage.sources.hellaswag, limit=plan.hellaswag_examples)
    shorter = work / "hellaswag.jsonl"
    shorter.write_text("".join(json.dumps({"ctx": e.context, "endings": e.endings, "label": e.label}) + "\n"
                               for e in examples))
    return ["--hellaswag_file", str(shorter)]


def trained_flops_per_token(run_dir: Path, data_dir: Path) -> float:
    """Model FLOPs a token of the model the recipe trained (its final/ config, on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(final_model_dir(run_dir)))
    return flops_per_token(model, read_metadata(data_dir)["block_size"])


def median_of(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None

"""run_pretrain.py: the recipe end to end: early errors, the whole job, compile, the quick start, DDP."""

import os
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.paths import REPO_ROOT
from support.runs import log_records, losses_in, run_together
from support.tiny import tiny_run_args

import run_pretrain
from eval.val_loss import DEFAULT_EVAL_TOKENS
from training.accelerator import CPU_LAUNCH_ENV, launch_command


def test_configuration_errors_are_one_line_and_early(tiny_data, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("optimization:\n  learning_rat: 0.1\n")
    assert run_pretrain.main([str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key optimization.learning_rat (did you mean 'learning_rate'?)" in capsys.readouterr().err
    cases = [
        (tiny_data, dict(total_batch_tokens=1000), "is not a multiple of micro_batch_size x block_size x processes"),
        (tiny_data, dict(n_positions=16), "exceeds the model's n_positions"),
        (tmp_path / "nowhere", {}, "is not prepared data"),
    ]
    for data_dir, overrides, message in cases:
        assert run_pretrain.main(tiny_run_args(data_dir, tmp_path / "run", **overrides)) == 2
        assert message in capsys.readouterr().err
    assert run_pretrain.main(["--learning_rat=0.1"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "run", push_to_hub=True)) == 2
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_end_to_end_job_and_refusal_to_mix_runs(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, sample_every=12, num_samples=2, sample_tokens=8)) == 0
    evals = losses_in(out / "log.jsonl", "eval", "val_loss")
    assert [step for step, _ in evals] == [6, 12] and evals[1][1] < evals[0][1]
    train = losses_in(out / "log.jsonl")
    assert len(train) == 12 and train[-1][1] < train[0][1]
    samples = log_records(out, "samples")
    assert len(samples[0]["samples"]) == 2
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    model = AutoModelForCausalLM.from_pretrained(out / "final")  # a plain GPT-2: no remote code
    assert isinstance(model, GPT2LMHeadModel) and model.config.n_layer == 2
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("final")) == ["final"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000006", "step_0000012"]
    assert run_pretrain.main(tiny_run_args(tiny_data, out)) == 2
    assert "holds another run" in capsys.readouterr().err














@pytest.mark.slow
def test_compiled_run_trains_like_eager_and_saves_plain_weights(tiny_data, tmp_path):
    """--compile (inductor through Accelerate, the recipe's setting): same losses, and a final model whose
    tensors are named as the model's own, not `_orig_mod.<name>`."""
    losses, weights = {}, {}
    commands = {compiled: [sys.executable, "run_pretrain.py", *tiny_run_args(
        tiny_data, tmp_path / f"compile_{compiled}", max_steps=4, eval_every=4, save_every=0, compile=compiled)]
        for compiled in ("false", "true")}
    runs = run_together(list(commands.values()), env={**os.environ, "OMP_NUM_THREADS": "1"})
    for compiled, done in zip(commands, runs, strict=True):
        assert done.returncode == 0, done.stderr[-3000:]
        out = tmp_path / f"compile_{compiled}"
        losses[compiled] = [loss for _, loss in losses_in(out / "log.jsonl")]
        weights[compiled] = load_file(out / "final" / "model.safetensors")
    assert len(losses["true"]) == 4
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=1e-4)
    assert weights["true"].keys() == weights["false"].keys()
    for name, tensor in weights["false"].items():
        torch.testing.assert_close(weights["true"][name], tensor, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_quickstart_commands(tmp_path):
    """`make quickstart`, shortened: the same two commands with the step count and paths overridden."""
    import sysconfig

    import prepare_data

    stdlib = sysconfig.get_paths()["stdlib"]
    assert prepare_data.main(["--dataset", "text", "--data_files", f"{stdlib}/*.py", "--train_tokenizer_vocab",
                              "2048", "--block_size", "128", "--output_dir", str(tmp_path / "data")]) == 0
    status = run_pretrain.main([str(REPO_ROOT / "configs" / "quickstart.yaml"), "--data_dir", str(tmp_path / "data"),
                                "--output_dir", str(tmp_path / "run"), "--max_steps", "20", "--eval_every", "10",
                                "--sample_every", "20", "--save_every", "10", "--report_to", "none",
                                "--dataloader_workers", "0"])
    assert status == 0
    evals = losses_in(tmp_path / "run" / "log.jsonl", "eval", "val_loss")
    assert len(evals) == 2 and evals[1][1] < evals[0][1]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").config.n_layer == 4


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_with_double_accumulation(tiny_data, tmp_path):
    """Real DDP over gloo on CPU: 2 processes x 1 micro-step against 1 process x 2 micro-steps."""
    base = tiny_run_args(tiny_data, tmp_path / "one", micro_batch_size=4, total_batch_tokens=8 * 32, max_steps=6,
                         eval_every=6, save_every=0)
    two_args = [a.replace(str(tmp_path / "one"), str(tmp_path / "two")) for a in base]
    one, two = run_together([launch_command("run_pretrain.py", 1, *base),
                             launch_command("run_pretrain.py", 2, *two_args)], env={**os.environ, **CPU_LAUNCH_ENV})
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout and "accumulation 1" in two.stdout, two.stdout[-2000:]
    assert "1 processes" in one.stdout and "accumulation 2" in one.stdout
    one_losses, two_losses = losses_in(tmp_path / "one" / "log.jsonl"), losses_in(tmp_path / "two" / "log.jsonl")
    assert [s for s, _ in one_losses] == [s for s, _ in two_losses] == list(range(1, 7))
    np.testing.assert_allclose([v for _, v in two_losses], [v for _, v in one_losses], rtol=1e-5)
    one_val = losses_in(tmp_path / "one" / "log.jsonl", "eval", "val_loss")
    two_val = losses_in(tmp_path / "two" / "log.jsonl", "eval", "val_loss")
    np.testing.assert_allclose([v for _, v in two_val], [v for _, v in one_val], rtol=1e-5)


def test_every_bad_value_exits_2_on_one_line_and_writes_nothing(tiny_data, tmp_path, capsys):
    cases = [
        (dict(n_head=5, n_embd=128), "--n_embd 128 is not divisible by --n_head 5"),
        (dict(learning_rate=-1), "--learning_rate -1.0 must be positive"),
        (dict(max_steps=0), "--max_steps 0 must be positive"),
        (dict(n_positions=16), "data block_size 32 exceeds the model's n_positions 16"),
        (dict(total_batch_tokens=1000), "is not a multiple of micro_batch_size x block_size x processes"),
        (dict(optimizer="adamw", muon_qkv="split"), "--muon_qkv acts only with --optimizer muon"),
    ]
    for overrides, message in cases:
        assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "run", **overrides)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("run_pretrain.py: error: ") and message in err and "\n" not in err, err
        assert not (tmp_path / "run").exists()


def test_is_due_reads_every_periodic_setting_the_same_way():
    due = {every: [step for step in range(1, 11) if run_pretrain.is_due(step, every, last_step=10)]
           for every in (4, 0, -1)}
    assert due == {4: [4, 8, 10], 0: [10], -1: []}


def test_0_runs_a_job_only_after_the_last_step_and_minus_1_never(tiny_data, tmp_path):
    at_end, never = tmp_path / "at_end", tmp_path / "never"
    jobs = ("log_every", "eval_every", "sample_every", "save_every")
    assert run_pretrain.main(tiny_run_args(tiny_data, at_end, max_steps=4, num_samples=1, sample_tokens=4,
                                           **dict.fromkeys(jobs, 0))) == 0
    logged = [(r["type"], r["step"]) for r in log_records(at_end)]
    assert logged == [("setup", 0), ("train", 4), ("eval", 4), ("samples", 4)]
    assert [p.name for p in (at_end / "checkpoints").iterdir()] == ["step_0000004"]
    # (eval_tokens at its default: a validation budget with no validation would be refused as inert)
    assert run_pretrain.main(tiny_run_args(tiny_data, never, max_steps=4, eval_tokens=DEFAULT_EVAL_TOKENS,
                                           **dict.fromkeys(jobs, -1))) == 0
    assert [r["type"] for r in log_records(never)] == ["setup"]  # what the device got
    assert not (never / "checkpoints").exists() and (never / "final" / "model.safetensors").exists()


def test_every_parameter_groups_learning_rate_is_logged(tiny_data, tmp_path):
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "adamw", max_steps=3)) == 0
    adamw = log_records(tmp_path / "adamw", "train")
    assert all(r["lr_matrices"] == r["lr_vectors"] == r["lr"] for r in adamw)
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "muon", max_steps=3, optimizer="muon",
                                           muon_learning_rate=1e-2, embedding_learning_rate=2e-3)) == 0
    muon = log_records(tmp_path / "muon", "train")
    for record in muon:  # one schedule scales every group's own peak (tiny_run_args: learning_rate 3e-3)
        factor = record["lr_vectors"] / 3e-3
        assert record["lr_hidden_matrices"] == pytest.approx(1e-2 * factor)
        assert record["lr_embeddings"] == pytest.approx(2e-3 * factor) and factor > 0


def test_signals_are_given_back_when_main_returns_and_a_pool_forked_later_ends(tiny_data, tmp_path):
    import multiprocessing
    import signal
    import time

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    assert before[signal.SIGTERM] == signal.SIG_DFL  # else the pool below could not end either
    for name in ("first", "second"):  # a sweep, a notebook: main() twice in one process
        assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / name, max_steps=2, save_every=0)) == 0
        assert {sig: signal.getsignal(sig) for sig in before} == before
    # What hung CI: a fork pool started afterwards inherited the loop's handler, and terminate() never ended it.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.apply_async(time.sleep, (120,))
        time.sleep(0.5)
        started = time.monotonic()
        pool.terminate()
        pool.join()
    assert time.monotonic() - started < 5


def test_signals_are_given_back_when_the_loop_raises(tiny_data, tmp_path, monkeypatch):
    import signal

    def own_handler(signum, frame):
        pass

    def broken_step(*args, **kwargs):
        assert signal.getsignal(signal.SIGTERM) != own_handler  # the loop's, while it trains
        raise ValueError("a bug in a training step")

    previous = signal.signal(signal.SIGTERM, own_handler)
    try:
        monkeypatch.setattr(run_pretrain, "train_step", broken_step)
        with pytest.raises(ValueError, match="a bug in a training step"):
            run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "run", max_steps=2))
        assert signal.getsignal(signal.SIGTERM) is own_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


SCRIPT = """import signal, sys
sys.path.insert(0, {root!r})
import run_pretrain

def train(name):
    before = signal.getsignal(signal.SIGTERM)
    status = run_pretrain.main({args!r} + ["--output_dir", {out!r} + name])
    print(name, int(status), signal.getsignal(signal.SIGTERM) is before, flush=True)
{calls}"""


def test_main_from_a_users_script_runs_under_the_guard_and_refuses_in_one_line_without_it(tiny_data, tmp_path):
    """DataLoader workers (here 1) come from a fork server, which imports the launching script: a script that
    calls main() at its top level would start the run again inside it."""
    args = [a for a in tiny_run_args(tiny_data, tmp_path / "unused", max_steps=2, eval_every=2, save_every=-1,
                                     dataloader_workers=1) if not a.startswith("--output_dir")]
    scripts = {"guarded": "if __name__ == '__main__':\n    train('first')\n    train('second')\n",
               "unguarded": "train('first')\n"}
    commands = []
    for name, calls in scripts.items():
        path = tmp_path / f"{name}.py"
        path.write_text(SCRIPT.format(root=str(REPO_ROOT), args=args, out=str(tmp_path / name), calls=calls))
        commands.append([sys.executable, str(path)])
    guarded, unguarded = run_together(commands, env={**os.environ, "OMP_NUM_THREADS": "1"})
    statuses = [line for line in guarded.stdout.splitlines() if line.endswith(("True", "False"))]
    assert statuses == ["first 0 True", "second 0 True"], guarded.stderr[-3000:]
    assert (tmp_path / "guardedfirst" / "final" / "config.json").exists()
    assert unguarded.stdout.strip() == "first 2 True", unguarded.stderr[-3000:]
    line = unguarded.stderr.strip().splitlines()[-1]
    assert line.startswith(f"run_pretrain.py: error: {tmp_path / 'unguarded.py'} calls run_pretrain.main() at its top")
    assert "if __name__ == \"__main__\":" in line and "--dataloader_workers 0" in line
    assert not (tmp_path / "unguardedfirst").exists()  # refused before anything was written

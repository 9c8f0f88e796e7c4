"""Faults injected into real runs: preemption, damaged checkpoints, disk errors, NaNs, bad configuration.

Each test here is a row of RELIABILITY.md.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from support.paths import REPO_ROOT
from support.runs import (
    log_records,
    logged_train_steps,
    losses_in,
    patched_run_pretrain,
    sigkill_during,
    training_processes,
)
from support.tiny import prepare_tiny_data, tiny_config, tiny_run_args

import run_pretrain
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.accelerator import CPU_LAUNCH_ENV, launch_command
from training.arguments import parse_config
from training.checkpoints import checkpoint_problem, resolve_resume
from training.exit_codes import ExitCode


def checkpoints(out):
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_sigterm_finishes_the_step_saves_and_exits_75_then_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = tiny_run_args(tiny_data, out, max_steps=100_000, save_every=0, eval_every=0)
    # The training process itself, as `srun python run_pretrain.py` runs it under SLURM (README).
    process = subprocess.Popen([sys.executable, "run_pretrain.py", *args], cwd=REPO_ROOT, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not log_records(out / "log.jsonl", "train") and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == ExitCode.PREEMPTED, stderr[-2000:]
    (saved,) = checkpoints(out)
    step = int(saved.split("_")[1])
    assert log_records(out, "train")[-1]["step"] == step  # the step in flight was finished, then saved
    resumed = run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=step + 2, save_every=0, eval_every=0,
                                              resume_from_checkpoint="latest"))
    assert resumed == 0
    assert log_records(out, "resume")[-1]["step"] == step
    assert log_records(out, "train")[-1]["step"] == step + 2


def test_unfinished_and_damaged_checkpoints_are_never_resumed(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=2, keep_last=3)) == 0
    assert checkpoints(out) == ["step_0000002", "step_0000004", "step_0000006"]
    # a save killed half-way leaves only a .tmp directory: never a candidate
    (out / "checkpoints" / "step_0000008.tmp").mkdir()
    (out / "checkpoints" / "step_0000008.tmp" / "model.safetensors").write_bytes(b"partial")
    # the newest complete checkpoint gets corrupted, the one before truncated
    newest = out / "checkpoints" / "step_0000006" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    optimizer = out / "checkpoints" / "step_0000004" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    config = parse_config(tiny_run_args(tiny_data, out, resume_from_checkpoint="latest"))
    assert resolve_resume(config, out) == out / "checkpoints" / "step_0000002"
    warnings = capsys.readouterr().err
    assert f"{newest} is corrupted (checksum mismatch)" in warnings
    assert f"{optimizer} is truncated or altered" in warnings
    explicit = tiny_run_args(tiny_data, out, resume_from_checkpoint=out / "checkpoints" / "step_0000006")
    assert run_pretrain.main(explicit) == 2
    assert f"cannot resume: {newest} is corrupted" in capsys.readouterr().err
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=8, resume_from_checkpoint="latest")) == 0
    assert log_records(out, "resume")[-1]["step"] == 2


def test_keep_last_keeps_the_newest_good_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=2, keep_last=1)) == 0
    assert checkpoints(out) == ["step_0000006"]
    assert checkpoint_problem(out / "checkpoints" / "step_0000006") is None


def test_disk_error_during_save_keeps_previous_checkpoints(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = Accelerator.save_state
    calls = []

    def save_state_until_disk_fills(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            Path(output_dir, "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state_until_disk_fills)
    status = run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=2))
    assert status == ExitCode.CHECKPOINT_FAILED
    assert "could not write checkpoint" in capsys.readouterr().err
    assert checkpoints(out) == ["step_0000002"]  # no step_0000004.tmp left behind
    assert checkpoint_problem(out / "checkpoints" / "step_0000002") is None


def poison_gradients_at(monkeypatch, bad_steps):
    """train_step whose gradients are NaN at the given (1-based) optimizer steps."""
    real_step = run_pretrain.train_step
    count = []

    def train_step(model, *args, **kwargs):
        result = real_step(model, *args, **kwargs)
        count.append(1)
        if len(count) in bad_steps:
            for param in model.parameters():
                param.grad.fill_(float("nan"))
            result.grad_norm = torch.tensor(float("nan"))
        return result

    monkeypatch.setattr(run_pretrain, "train_step", train_step)


def test_nonfinite_step_is_skipped_and_logged(tiny_data, tmp_path, monkeypatch):
    poison_gradients_at(monkeypatch, {3})
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, on_nonfinite="skip")) == 0
    (event,) = log_records(out, "nonfinite")
    assert event["step"] == 3 and event["action"] == "skip"
    weights = load_file(out / "checkpoints" / "step_0000006" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert all(r["loss"] == r["loss"] for r in log_records(out, "train"))  # NaN is the one value unequal to itself


def test_nonfinite_step_stops_the_run_without_saving_over_good_state(tiny_data, tmp_path, monkeypatch):
    poison_gradients_at(monkeypatch, {5})
    out = tmp_path / "run"
    status = run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=8, save_every=2, on_nonfinite="stop"))
    assert status == ExitCode.NONFINITE
    assert checkpoints(out) == ["step_0000002", "step_0000004"]
    assert log_records(out, "nonfinite")[0]["step"] == 5
    assert not (out / "final").exists()


def test_data_from_another_tokenizer_is_refused(tiny_data, tmp_path, capsys):
    other = GPT2ScratchForCausalLM(tiny_config(n_positions=64))  # vocabulary 101, the data's is 384
    other.save_pretrained(tmp_path / "other")
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "run", init_from=tmp_path / "other")) == 2
    assert "has vocab 101" in capsys.readouterr().err


def test_too_little_disk_for_one_checkpoint_is_refused(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "run")) == 2
    assert "one checkpoint needs about" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def resumes_bit_for_bit(straight: Path, killed: Path, last_step: int) -> int:
    """After a resume, the steps the kill lost repeat the uninterrupted run's losses exactly and the last
    checkpoint's weights are bitwise equal; returns the step the run resumed from."""
    resumed_from = next(r["step"] for r in log_records(killed, "resume"))
    redone = last_step - resumed_from
    train = {name: losses_in(run)
             for name, run in (("straight", straight), ("killed", killed))}
    assert train["killed"][-redone:] == train["straight"][-redone:]
    last = f"step_{last_step:07d}"
    a = load_file(straight / "checkpoints" / last / "model.safetensors")
    b = load_file(killed / "checkpoints" / last / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return resumed_from


def test_run_killed_with_sigkill_resumes_bit_for_bit(tiny_data, tmp_path):
    """SIGKILL from outside once step 8 is logged (checkpoints every 6 steps); resumed, the lost steps repeat
    the uninterrupted run exactly. Steps of 640 rows (8 micro-batches of 80) over ~5,500 training rows put
    an epoch boundary (a reshuffle) after step 17, inside the resumed stretch."""
    args = dict(micro_batch_size=80, total_batch_tokens=640 * 32, max_steps=18)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # all three runs alike: thread counts change summation order

    def command(out, **extra):
        return [sys.executable, "run_pretrain.py", *tiny_run_args(tiny_data, out, **args, **extra)]

    uninterrupted = subprocess.Popen(command(straight), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # at the same time as the one killed: two cores
    assert sigkill_during(command(killed), killed / "log.jsonl", 8, env) == -signal.SIGKILL
    assert uninterrupted.wait(timeout=300) == 0
    assert max(logged_train_steps(killed / "log.jsonl")) < 18 and checkpoints(killed)
    resumed = subprocess.run(command(killed, resume_from_checkpoint="latest"), cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumes_bit_for_bit(straight, killed, 18) <= 12
    rows = len(__import__("datasets").load_from_disk(str(tiny_data))["train"])
    assert 6 * 640 < rows < 12 * 640  # an epoch ends inside steps 13-18


DDP_STEPS = 18


def ddp_run_args(tiny_data, out, **overrides) -> list[str]:
    """The two-process runs of this file: 18 steps, checkpoints every 6, a stall noticed after 20 s."""
    return tiny_run_args(tiny_data, out, max_steps=DDP_STEPS, stall_timeout_seconds=20, **overrides)


RANK_ONE_STOPS_AT_STEP_7 = """
import signal

real_step = run_pretrain.train_step
steps = []


def train_step(*args, **kwargs):
    # Rank 1 stops itself as step 7 begins, after the step-6 checkpoint, with the signal STOP_SIGNAL names:
    # SIGSTOP for a hung GPU, a dead file system or a stuck data worker; SIGKILL for a crash.
    steps.append(1)
    if os.environ["RANK"] == "1" and len(steps) == 7:
        os.kill(os.getpid(), getattr(signal, os.environ["STOP_SIGNAL"]))
    return real_step(*args, **kwargs)


run_pretrain.train_step = train_step
"""


def per_rank_launch(script, args: list[str], stderr_dir: Path, **env_extra) -> list[subprocess.Popen]:
    """Two gloo processes started one by one, as SLURM's srun starts them (README): each told its RANK, the
    WORLD_SIZE and where rank 0 listens. Each one's stderr goes to stderr_dir/rank{R}.txt."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **CPU_LAUNCH_ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           **env_extra}
    stderr_dir.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([sys.executable, str(script), *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                             stderr=open(stderr_dir / f"rank{rank}.txt", "w"),
                             env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)})
            for rank in range(2)]


LAUNCHER_WITH_AN_ENDED_RANK = """
import os, subprocess, sys, time

def start(rank, *args):
    return subprocess.Popen([sys.executable, *args], env={**os.environ, "RANK": str(rank)})

def zombie(pid):
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"

ended = start(1, sys.argv[1])  # never waited for: it stays a zombie
live = start(0, sys.argv[2], sys.argv[3])
deadline = time.time() + 30
while not (zombie(ended.pid) and os.path.exists(sys.argv[3])) and time.time() < deadline:
    time.sleep(0.01)
print("ready", flush=True)
live.wait()
"""

RANK_WITH_A_FORKED_WORKER = """
import os, sys, time

if os.fork() == 0:
    open(sys.argv[1], "w").close()
time.sleep(60)
"""


def test_the_launched_processes_are_found_by_rank_past_a_child_that_has_ended(tmp_path):
    """A launcher's child that has just ended (a zombie) has no command line; it is skipped, not an error. A
    rank's own forked worker carries the same command line and RANK, and is not taken for the rank."""
    import psutil

    scripts = {}
    for folder, body in (("ended", ""), ("live", RANK_WITH_A_FORKED_WORKER)):
        (tmp_path / folder).mkdir()
        scripts[folder] = tmp_path / folder / "run_pretrain.py"
        scripts[folder].write_text(body)
    forked = tmp_path / "forked"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER_WITH_AN_ENDED_RANK, str(scripts["ended"]),
                                 str(scripts["live"]), str(forked)], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline() == "ready\n" and forked.exists()
        found = training_processes(launcher.pid)
        assert list(found) == [0] and found[0].ppid() == launcher.pid
    finally:
        for process in psutil.Process(launcher.pid).children(recursive=True):
            process.kill()
        launcher.kill()
        launcher.wait()


def launched_ranks(launcher: subprocess.Popen) -> dict:
    """accelerate launch's two training processes (psutil.Process) by rank, once both have started."""
    deadline = time.time() + 120
    while time.time() < deadline:
        found = training_processes(launcher.pid)
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise AssertionError("the launcher did not start two training processes")


def wait_until_stopped(pid: int) -> float:
    """Until the process is stopped (SIGSTOP); returns that moment."""
    import psutil

    process = psutil.Process(pid)
    deadline = time.time() + 240
    while process.status() != psutil.STATUS_STOPPED:
        assert time.time() < deadline, "rank 1 did not stop"
        time.sleep(0.01)
    return time.time()


def stall_line(out: Path) -> str:
    """Rank 0's one line: the step it was training, where its stacks are, how to go on."""
    return (f"run_pretrain.py: error: rank 0 made no progress for 20 s at step 7 (training); stacks in "
            f"{out / 'stall_rank0.txt'}; resume with --resume_from_checkpoint latest")


def newest_checkpoint_loads(out: Path) -> str:
    """The newest checkpoint's name, once its checksums match and its weights load into the model."""
    newest = checkpoints(out)[-1]
    assert checkpoint_problem(out / "checkpoints" / newest) is None
    model = GPT2ScratchForCausalLM(tiny_config(vocab_size=384, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    missing, unexpected = model.load_state_dict(load_file(out / "checkpoints" / newest / "model.safetensors"),
                                                strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # the tied head is saved once, as wte
    return newest


@dataclass
class StalledRun:
    out: Path
    waited: float  # seconds from rank 1's stop to rank 0's end
    rank0_status: int | None  # None under accelerate launch: torchrun reports it
    stderr: str  # rank 0's (per rank), or the launcher's, with every rank's


@dataclass
class DDPRuns:
    straight: Path  # uninterrupted: what every interrupted and resumed run must repeat exactly
    stalled: dict[str, StalledRun]  # by launch style: per_rank, accelerate


@pytest.fixture(scope="module")
def ddp_runs(tiny_data, tmp_path_factory) -> DDPRuns:
    """Two gloo processes, three times at once so that the suite waits out one stall, not three runs:
    - straight, through accelerate launch;
    - rank 1 stopping itself (SIGSTOP) as step 7 begins, after the step-6 checkpoint, with
      --stall_timeout_seconds 20, started per rank (as SLURM's srun starts them) and through accelerate launch.
    Rank 1 is killed once rank 0 has ended, as srun --kill-on-bad-exit or torchrun do."""
    import psutil

    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, **CPU_LAUNCH_ENV}
    straight = subprocess.Popen(launch_command("run_pretrain.py", 2, *ddp_run_args(tiny_data, root / "straight")),
                                cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    script = patched_run_pretrain(root, RANK_ONE_STOPS_AT_STEP_7)
    per_rank = per_rank_launch(script, ddp_run_args(tiny_data, root / "per_rank"), root / "per_rank_stderr",
                               STOP_SIGNAL="SIGSTOP")
    launcher_stderr = tempfile.TemporaryFile("w+")
    launcher = subprocess.Popen(launch_command(str(script), 2, *ddp_run_args(tiny_data, root / "accelerate")),
                                cwd=REPO_ROOT, env={**env, "STOP_SIGNAL": "SIGSTOP"}, stdout=subprocess.DEVNULL,
                                stderr=launcher_stderr, text=True)
    ranks = {"per_rank": {rank: psutil.Process(p.pid) for rank, p in enumerate(per_rank)},
             "accelerate": launched_ranks(launcher)}
    stopped = {name: wait_until_stopped(processes[1].pid) for name, processes in ranks.items()}
    statuses, waited = {}, {}
    for name, processes in ranks.items():
        statuses[name] = processes[0].wait(timeout=60)  # psutil reaps rank 0 started per rank: its status is here
        waited[name] = time.time() - stopped[name]
        processes[1].kill()
    launcher.wait(timeout=120)
    _, straight_stderr = straight.communicate(timeout=300)
    assert straight.returncode == 0, straight_stderr[-2000:]
    launcher_stderr.seek(0)
    return DDPRuns(root / "straight", {
        "per_rank": StalledRun(root / "per_rank", waited["per_rank"], statuses["per_rank"],
                               (root / "per_rank_stderr" / "rank0.txt").read_text()),
        "accelerate": StalledRun(root / "accelerate", waited["accelerate"], None, launcher_stderr.read()),
    })


@pytest.fixture(scope="module")
def straight_ddp_run(ddp_runs) -> Path:
    return ddp_runs.straight


@pytest.fixture(scope="module")
def stalled_runs(ddp_runs) -> dict[str, StalledRun]:
    return ddp_runs.stalled


@pytest.mark.slow
def test_a_stalled_rank_ends_its_peer_with_its_stacks_and_76_then_resumes_per_rank(tiny_data, tmp_path,
                                                                                straight_ddp_run, stalled_runs):
    stalled = stalled_runs["per_rank"]
    assert stalled.rank0_status == ExitCode.STALLED and 20 <= stalled.waited < 60
    assert stalled.stderr.strip().splitlines()[-1] == stall_line(stalled.out)
    assert "in train_step" in (stalled.out / "stall_rank0.txt").read_text()  # the main thread, stuck in the step
    assert newest_checkpoint_loads(stalled.out) == "step_0000006"
    resumed = per_rank_launch("run_pretrain.py", ddp_run_args(tiny_data, stalled.out, resume_from_checkpoint="latest"),
                              tmp_path / "resumed")
    assert [p.wait(timeout=300) for p in resumed] == [0, 0], (tmp_path / "resumed" / "rank0.txt").read_text()[-2000:]
    assert resumes_bit_for_bit(straight_ddp_run, stalled.out, DDP_STEPS) == 6


@pytest.mark.slow
def test_a_stalled_rank_ends_its_peer_with_its_stacks_and_76_then_resumes_under_accelerate_launch(
        tiny_data, straight_ddp_run, stalled_runs):
    stalled = stalled_runs["accelerate"]
    assert 20 <= stalled.waited < 60
    assert stall_line(stalled.out) in stalled.stderr.splitlines(), stalled.stderr[-3000:]
    assert "exitcode  : 76" in stalled.stderr, stalled.stderr[-3000:]  # torchrun's report of rank 0's status
    assert "in train_step" in (stalled.out / "stall_rank0.txt").read_text()
    assert newest_checkpoint_loads(stalled.out) == "step_0000006"
    resumed = subprocess.run(launch_command("run_pretrain.py", 2, *ddp_run_args(
        tiny_data, stalled.out, resume_from_checkpoint="latest")), cwd=REPO_ROOT,
        env={**os.environ, **CPU_LAUNCH_ENV}, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumes_bit_for_bit(straight_ddp_run, stalled.out, DDP_STEPS) == 6


@pytest.mark.slow
def test_a_lost_rank_ends_its_peer_on_one_line_with_76_then_resumes_per_rank(tiny_data, tmp_path, straight_ddp_run):
    out = tmp_path / "run"
    launched = per_rank_launch(patched_run_pretrain(tmp_path, RANK_ONE_STOPS_AT_STEP_7), ddp_run_args(tiny_data, out),
                               tmp_path / "stderr", STOP_SIGNAL="SIGKILL")
    assert launched[1].wait(timeout=240) == -signal.SIGKILL
    killed = time.time()
    assert launched[0].wait(timeout=60) == ExitCode.STALLED
    assert time.time() - killed < 20  # at once: a dropped connection, not a timeout
    err = (tmp_path / "stderr" / "rank0.txt").read_text()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("run_pretrain.py: error: rank 0 lost a peer process at step 7 (training); "
                                            "resume with --resume_from_checkpoint latest")
    # both ranks relaunched: the lost steps repeat the uninterrupted run exactly
    resumed = per_rank_launch("run_pretrain.py", ddp_run_args(tiny_data, out, resume_from_checkpoint="latest"),
                              tmp_path / "resumed")
    assert [p.wait(timeout=300) for p in resumed] == [0, 0], (tmp_path / "resumed" / "rank0.txt").read_text()[-2000:]
    assert resumes_bit_for_bit(straight_ddp_run, out, DDP_STEPS) == 6


SAVE_HANGS_AT_STEP_4 = """
import threading
from pathlib import Path

from accelerate import Accelerator

real_save = Accelerator.save_state


def save_state(self, output_dir=None, **kwargs):
    if "step_0000004" in str(output_dir):  # half a checkpoint, then a file system that stops answering
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "model.safetensors").write_bytes(b"half")
        threading.Event().wait()
    return real_save(self, output_dir, **kwargs)


Accelerator.save_state = save_state
"""


def test_a_stall_during_a_save_leaves_the_earlier_checkpoint_to_resume(tiny_data, tmp_path):
    out = tmp_path / "run"
    script = patched_run_pretrain(tmp_path, SAVE_HANGS_AT_STEP_4)
    stalled = subprocess.run([sys.executable, str(script), *tiny_run_args(tiny_data, out, max_steps=6, save_every=2,
                                                                          stall_timeout_seconds=3)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert stalled.returncode == ExitCode.STALLED, stalled.stderr[-2000:]
    assert stalled.stderr.strip().splitlines()[-1].startswith(
        "run_pretrain.py: error: rank 0 made no progress for 3 s at step 4 (checkpoint); stacks in ")
    assert checkpoints(out) == ["step_0000002", "step_0000004.tmp"]
    config = parse_config(tiny_run_args(tiny_data, out, resume_from_checkpoint="latest"))
    assert resolve_resume(config, out) == out / "checkpoints" / "step_0000002"


def test_data_prepared_again_resumes_and_other_data_is_named(tiny_data, tmp_path, capsys):
    """A checkpoint knows its data by content: the same corpus prepared again elsewhere resumes it (a second
    node's disk, a lost disk); other data is refused with what differs."""
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=4, save_every=2)) == 0
    checkpoint = out / "checkpoints" / "step_0000002"
    again, other = tmp_path / "again", tmp_path / "other"
    prepare_tiny_data(again)
    prepare_tiny_data(other, block_size=16)
    resumed = tmp_path / "resumed"
    assert run_pretrain.main(tiny_run_args(again, resumed, max_steps=4, save_every=2,
                                           resume_from_checkpoint=checkpoint)) == 0
    assert log_records(resumed, "resume")[0]["step"] == 2
    assert [(r["step"], r["loss"]) for r in log_records(resumed, "train")] == [
        (r["step"], r["loss"]) for r in log_records(out, "train")[2:]]  # the same rows, the same losses
    assert run_pretrain.main(tiny_run_args(other, tmp_path / "refused", max_steps=4,
                                           resume_from_checkpoint=checkpoint)) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint} was trained on other data than {other} (block_size: 32 vs 16)" in err


def test_a_checkpoint_of_an_earlier_version_is_refused_on_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=2, save_every=2)) == 0
    checkpoint = out / "checkpoints" / "step_0000002"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    del manifest["data_identity"]  # what the kit recorded before it knew its data by content
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "refused", max_steps=4,
                                           resume_from_checkpoint=checkpoint)) == ExitCode.BAD_SETTING
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"run_pretrain.py: error: {checkpoint} was written by an earlier version of this kit, which did not record "
        "what its data is: it cannot be resumed here")


FP16_ON_CPU = """
real = run_pretrain.build_accelerator


def with_cpu_scaler(config):
    # Accelerate enters fp16 only on GPUs: on CPU it gives no autocast and no scaler. These two lines give it
    # CPU fp16 autocast and torch's CPU GradScaler, so its own fp16 path runs (scaled backward, unscaling
    # before clipping, the scaler's step and update, save_state / load_state of the scaler). The first loss
    # scale is far too high, so the first steps overflow, as fp16 training's first steps do.
    accelerator = real(config)
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1000)
    return accelerator


run_pretrain.build_accelerator = with_cpu_scaler
"""


@pytest.mark.slow
def test_fp16_overflow_steps_are_skipped_logged_and_the_scaler_resumes(tiny_data, tmp_path):
    """Layer exercised: Accelerate's fp16 machinery and the loop's handling of it, on CPU (see FP16_ON_CPU)."""
    script = patched_run_pretrain(tmp_path, FP16_ON_CPU)

    def run(out, **overrides):
        args = tiny_run_args(tiny_data, out, mixed_precision="fp16", max_steps=6, save_every=3, **overrides)
        return subprocess.run([sys.executable, str(script), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]  # overflows are not a non-finite stop
    overflows = log_records(tmp_path / "straight", "overflow")
    scales = [r["scale"] for r in overflows]
    assert len(overflows) >= 2 and scales == [2.0**126 / 2**i for i in range(len(scales))]  # halved each time
    assert not log_records(tmp_path / "straight", "nonfinite")
    trained = [r["step"] for r in log_records(tmp_path / "straight", "train")]
    assert trained == [1, 2, 3, 4, 5, 6]  # the schedule and the data went on through the skipped steps
    assert (tmp_path / "straight" / "checkpoints" / "step_0000003" / "scaler.pt").exists()
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step_0000003", resumed_dir / "step_0000003")
    resumed = run(resumed_dir / "run", resume_from_checkpoint=resumed_dir / "step_0000003")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    later = [(r["step"], r["scale"]) for r in overflows if r["step"] > 3]
    assert [(r["step"], r["scale"]) for r in log_records(resumed_dir / "run", "overflow")] == later  # the scale resumed
    straight_losses = [(r["step"], r["loss"]) for r in log_records(tmp_path / "straight", "train")]
    assert [(r["step"], r["loss"]) for r in log_records(resumed_dir / "run", "train")] == straight_losses[3:]

"""Running `run_pretrain.py` in a process of its own (patched, or killed part-way) and reading its log."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from formats.run_log import LOG_FILE
from support.paths import REPO_ROOT


def log_records(run_or_log: Path, kind: str | None = None) -> list[dict]:
    """A run's log records in the order written (a resumed run's repeated steps included), of one type if
    given; none when there is no log yet. Takes the run's directory or its log file."""
    path = Path(run_or_log)
    path = path / LOG_FILE if path.is_dir() else path
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r["type"] == kind]


def losses_in(run_or_log: Path, kind: str = "train", key: str = "loss") -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in log_records(run_or_log, kind)]


def logged_train_steps(run_or_log: Path) -> list[int]:
    return [r["step"] for r in log_records(run_or_log, "train")]


def run_script(args, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "run_pretrain.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True)


def run_together(commands: list[list[str]], env: dict, timeout: float = 300,
                 cwd: Path = REPO_ROOT) -> list[subprocess.CompletedProcess]:
    """Independent commands started at once and waited for (each mostly imports on one core: two cores run two),
    with their output as `subprocess.run` would capture it."""
    with tempfile.TemporaryDirectory() as folder:
        started = []
        for i, command in enumerate(commands):
            stdout, stderr = open(Path(folder) / f"{i}.out", "w+"), open(Path(folder) / f"{i}.err", "w+")
            started.append((command, subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                                                      text=True), stdout, stderr))
        done = []
        for command, process, stdout, stderr in started:
            process.wait(timeout=timeout)
            stdout.seek(0), stderr.seek(0)
            done.append(subprocess.CompletedProcess(command, process.returncode, stdout.read(), stderr.read()))
            stdout.close(), stderr.close()
        return done


def sigkill_during(command: list[str], log_path: Path, after_step: int, env: dict) -> int:
    """Start a training command and SIGKILL a training process of it (one of the launcher's workers, or the
    command itself) once its log shows step `after_step`, as a crash or an OOM killer would; returns the
    command's exit status."""
    with tempfile.TemporaryFile() as stderr:  # a pipe could fill up with progress bars and stall the run
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline:
            if any(step >= after_step for step in logged_train_steps(log_path)):
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        workers = training_processes(process.pid)
        os.kill((workers[min(workers)] if workers else process).pid, signal.SIGKILL)
        return process.wait(timeout=120)


def training_processes(pid: int) -> dict:
    """The `run_pretrain.py` processes (psutil.Process) started under process `pid`, by RANK; none when `pid` is
    the training process itself. A child that ends while it is read (a zombie, or gone) is skipped."""
    import psutil

    found = {}
    for child in psutil.Process(pid).children(recursive=True):  # parents before their own children
        try:
            if any(part.endswith("run_pretrain.py") for part in child.cmdline()):
                found.setdefault(int(child.environ().get("RANK", -1)), child)  # not a forked worker of the rank
        except psutil.Error:
            continue
    return found


def patched_run_pretrain(folder: Path, patch: str) -> Path:
    """A script that runs run_pretrain.py's main() after `patch`, source that replaces a function of the kit:
    the device or fault a test stands in for, in processes of their own (a launcher's, or one Accelerate
    state that must differ from the test process's)."""
    script = folder / "patched_run_pretrain.py"
    script.write_text("import os\nimport sys\n\nimport torch\n\nimport run_pretrain\n" + patch
                      + "\nsys.exit(run_pretrain.main(sys.argv[1:]))\n")
    return script

"""What a command costs: wall time, and the peak memory of its whole process tree (resident, and the proportional
anonymous part that forked workers and memory-mapped files would otherwise overstate), sampled every 50 ms in a
run of its own."""

import subprocess
import tempfile
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


def anonymous_pss(pid: int) -> int | None:
    """A process's share of anonymous memory (Linux's Pss_Anon): pages it shares with its forked children
    count once across them, not once in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss_Anon:"))
    except (OSError, StopIteration):
        return None


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """Bytes of the process and its descendants: resident (RSS, summed), and anonymous (proportional: no
    pages of memory-mapped files, such as the Arrow caches datasets reads, which the kernel can drop, and
    each page shared after a fork counted once)."""
    resident = anonymous = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_info()
        except psutil.Error:
            continue
        resident += info.rss
        proportional = anonymous_pss(member.pid)
        anonymous += proportional if proportional is not None else info.rss - info.shared
    return resident, anonymous


def measured(command: list[str], env: dict, cwd: Path = REPO_ROOT, sample_memory: bool = True) -> dict:
    """Wall seconds, the process tree's peak memory (resident, anonymous; None when not `sample_memory`), and the
    command's stdout; a command that fails ends the benchmark with its stderr.

    Sampling is not free: reading every process's `smaps_rollup` took 16 ms (the reproduction's pipeline) to
    28 ms (prepare_data.py, whose processes map the Arrow files) a sample, a third to a half of a core at one
    sample every 50 ms, which slowed those two commands by 1.5 and 1.2 s of 13. Time a command in a run of its
    own, without sampling."""
    with tempfile.TemporaryFile("w+") as stderr:  # progress bars: a pipe nobody reads would fill and block them
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        peak = peak_anonymous = None
        if sample_memory:
            watched, peak, peak_anonymous = psutil.Process(process.pid), 0, 0
            while process.poll() is None:
                try:
                    resident, anonymous = tree_memory(watched)
                except psutil.Error:
                    resident = anonymous = 0
                peak, peak_anonymous = max(peak, resident), max(peak_anonymous, anonymous)
                time.sleep(0.05)
        stdout, _ = process.communicate()
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{stderr.read()[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": peak, "peak_anonymous_bytes": peak_anonymous, "stdout": stdout}

"""What a command costs: wall time and the peak memory of its whole process tree (resident, and the proportional
anonymous part that forked workers and memory-mapped files would otherwise overstate), sampled every 50 ms."""

import subprocess
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


def measured(command: list[str], env: dict, cwd: Path = REPO_ROOT) -> dict:
    """Wall seconds, the process tree's peak memory (resident, anonymous), and the command's stdout; a command
    that fails ends the benchmark with its stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    watched, peak, peak_anonymous = psutil.Process(process.pid), 0, 0
    while process.poll() is None:
        try:
            resident, anonymous = tree_memory(watched)
        except psutil.Error:
            resident = anonymous = 0
        peak, peak_anonymous = max(peak, resident), max(peak_anonymous, anonymous)
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": peak, "peak_anonymous_bytes": peak_anonymous, "stdout": stdout}

"""Everything that can stop a run from outside its own arithmetic, in one place: what the loop does about each.

- preemption (`PreemptionFlag`): SIGTERM or SIGUSR1 finishes the step, saves a checkpoint and exits 75;
- a stalled rank (`StallWatchdog`): no progress for the timeout ends it with every thread's stack, one line and
  exit 76;
- a lost peer (`stop_on_lost_peer`): a closed connection or a timed-out collective ends every surviving rank
  with one line and 76, after tearing the broken process group down;
- the collective timeout (`process_group_settings`): tied to the stall timeout, so the watchdog speaks first.

Job scripts requeue on 75 and 76. Without this, a rank that stops making progress (a hung GPU, a dead file
system, a stuck data worker) leaves the others waiting in their next collective for the process group's
timeout, 30 minutes on gloo and 10 on NCCL, in silence; and a lost peer under a per-rank launch surfaces as a
long gloo or NCCL traceback.
"""

import faulthandler
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import InitProcessGroupKwargs

from training.exit_codes import ExitCode

# The process group's collectives time out this long after the watchdog would have fired: the watchdog, which
# writes the stacks and names the step, always speaks first, and a blocked collective still raises.
COLLECTIVE_GRACE_SECONDS = 60
RESUME_HINT = "resume with --resume_from_checkpoint latest"


class RunStopped(Exception):
    """A peer process was lost: the run cannot go on, and says so in one line."""


def collective_timeout(stall_timeout_seconds: int) -> timedelta | None:
    """The process group's collective timeout tied to the stall timeout (None: the library's default)."""
    return timedelta(seconds=stall_timeout_seconds + COLLECTIVE_GRACE_SECONDS) if stall_timeout_seconds > 0 else None


def process_group_settings(stall_timeout_seconds: int) -> list[InitProcessGroupKwargs]:
    """A blocked collective raises soon after the stall watchdog would have fired, not after the library's
    30 (gloo) or 10 (NCCL) minutes."""
    timeout = collective_timeout(stall_timeout_seconds)
    return [InitProcessGroupKwargs(timeout=timeout)] if timeout else []


class PreemptionFlag:
    """Set by SIGTERM or SIGUSR1 (what SLURM and cloud schedulers send before killing a job) while inside; the
    handlers that were there before are given back on the way out, however the loop ends."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.raised = False
        self.previous = {}

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.raised = True


class StallWatchdog:
    """Tracks where this rank is (step and phase) and, with a timeout, watches from a background thread that
    progress keeps coming: a `beat()` (a finished step, an evaluation batch) or bytes written under a folder
    named by `watch_files` (a checkpoint being saved). When none comes for `timeout_seconds`, it writes every
    thread's stack to `output_dir/stall_rank{R}.txt`, prints one line, and ends the process with exit status
    76 from that thread, since the main thread is stuck.

    As a context manager it starts and stops its thread; `exit` is what ends the process (tests replace it).
    """

    def __init__(self, timeout_seconds: int, output_dir: Path, rank: int, exit=os._exit, poll_seconds: float = 1.0):
        self.timeout_seconds, self.output_dir, self.rank = timeout_seconds, Path(output_dir), rank
        self.exit, self.poll_seconds = exit, poll_seconds
        self.step, self.phase = 0, "starting"
        self.last_progress = time.monotonic()
        self.watched: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def __enter__(self):
        self.beat()
        if self.timeout_seconds > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def beat(self, step: int | None = None, phase: str | None = None):
        """Progress, and where the rank now is."""
        self.step = self.step if step is None else step
        self.phase = self.phase if phase is None else phase
        self.last_progress = time.monotonic()

    @contextmanager
    def watch_files(self, folder: Path):
        """While inside, bytes written under `folder` count as progress (a large checkpoint on a slow disk)."""
        self.watched = Path(folder)
        try:
            yield
        finally:
            self.watched = None

    def where(self) -> str:
        return f"step {self.step} ({self.phase})"

    def stack_file(self) -> Path:
        return self.output_dir / f"stall_rank{self.rank}.txt"

    def _watch(self):
        written = -1
        while not self._stop.wait(self.poll_seconds):
            folder = self.watched
            if folder is not None:
                now_written = bytes_under(folder)
                if now_written != written:
                    written = now_written
                    self.beat()
            if time.monotonic() - self.last_progress > self.timeout_seconds:
                self._report_stall()
                return

    def _report_stall(self):
        where, path = self.where(), self.stack_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as f:
                f.write(f"rank {self.rank}: no progress for {self.timeout_seconds} s at {where}\n\n")
                f.flush()
                faulthandler.dump_traceback(file=f, all_threads=True)
            stacks = f"stacks in {path}"
        except OSError as error:  # the stall may be the file system itself: still end, still say why
            stacks = f"stacks not written ({error})"
        print(f"\nrun_pretrain.py: error: rank {self.rank} made no progress for {self.timeout_seconds} s at {where}; "
              f"{stacks}; {RESUME_HINT}", file=sys.stderr, flush=True)
        self.exit(ExitCode.STALLED)


def bytes_under(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:  # files renamed or removed while counting: count again next time
        return -1


# What gloo and NCCL say when a peer's connection drops or a collective times out (torch raises most of them as
# a plain RuntimeError).
LOST_PEER_MESSAGES = ("Connection closed by peer", "Connection reset by peer", "Timed out waiting",
                      "NCCL communicator was aborted", "Watchdog caught collective operation timeout")


def is_lost_peer(error: BaseException) -> bool:
    """An error from the process group: a peer closed its connection, or a collective timed out."""
    return isinstance(error, torch.distributed.DistError) or any(text in str(error) for text in LOST_PEER_MESSAGES)


def lost_peer_message(watchdog: StallWatchdog) -> str:
    return f"rank {watchdog.rank} lost a peer process at {watchdog.where()}; {RESUME_HINT}"


def stop_on_lost_peer(error: BaseException, watchdog: StallWatchdog):
    """If `error` says a peer was lost: tear the broken group down and raise RunStopped (one line, 76)."""
    if is_lost_peer(error):
        # Torn down here, the broken group cannot abort the interpreter's exit (gloo does after a timeout).
        torch.distributed.destroy_process_group()
        raise RunStopped(lost_peer_message(watchdog)) from None

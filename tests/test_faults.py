"""training/faults.py: preemption, a stalled rank (its stacks and one line), what counts as progress, lost peers."""

import os
import signal
import threading
import time
from datetime import timedelta

import pytest

from training.exit_codes import ExitCode
from training.faults import (
    COLLECTIVE_GRACE_SECONDS,
    PreemptionFlag,
    StallWatchdog,
    collective_timeout,
    is_lost_peer,
)


def watchdog(tmp_path, timeout, exits: list) -> StallWatchdog:
    """A watchdog whose exit is recorded (it would end the test process) and that polls every 50 ms."""
    return StallWatchdog(timeout, tmp_path, rank=3, exit=exits.append, poll_seconds=0.05)


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_no_progress_writes_every_threads_stack_and_ends_with_76(tmp_path, capsys):
    exits = []
    stuck = threading.Event()
    blocked = threading.Thread(target=stuck.wait, name="blocked-in-a-collective", daemon=True)
    blocked.start()
    with watchdog(tmp_path, 1, exits) as dog:
        dog.beat(12, "validation")
        started = time.monotonic()
        assert wait_for(lambda: exits, seconds=10)
        waited = time.monotonic() - started
    stuck.set()
    assert exits == [ExitCode.STALLED] and 1.0 <= waited < 3.0
    stacks = (tmp_path / "stall_rank3.txt").read_text()
    assert stacks.startswith("rank 3: no progress for 1 s at step 12 (validation)")
    assert "in wait" in stacks and stacks.count("Thread 0x") + stacks.count("Current thread 0x") >= 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"run_pretrain.py: error: rank 3 made no progress for 1 s at step 12 (validation); stacks in "
                    f"{tmp_path / 'stall_rank3.txt'}; resume with --resume_from_checkpoint latest")


def test_beats_and_bytes_written_are_progress(tmp_path):
    exits = []
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with watchdog(tmp_path, 1, exits) as dog:
        for step in range(8):  # 2 s of steps, each well inside the timeout
            dog.beat(step, "training")
            time.sleep(0.25)
        with dog.watch_files(folder):  # 2 s of a slow save: no beat, but the files grow
            for i in range(8):
                (folder / f"part{i}").write_bytes(b"x" * (i + 1))
                time.sleep(0.25)
        assert not exits
        assert wait_for(lambda: exits, seconds=5)  # once the writing stops, the clock runs out
    assert exits == [ExitCode.STALLED]


def test_a_timeout_of_zero_starts_no_thread_and_the_process_group_keeps_its_default(tmp_path):
    exits = []
    with watchdog(tmp_path, 0, exits) as dog:
        dog.beat(1, "training")
        time.sleep(0.3)
        assert not dog._thread.is_alive()
        assert dog.where() == "step 1 (training)"  # still known, for a lost peer's line
    assert not exits and not (tmp_path / "stall_rank3.txt").exists()
    assert collective_timeout(0) is None
    assert collective_timeout(20) == timedelta(seconds=20 + COLLECTIVE_GRACE_SECONDS)


@pytest.mark.parametrize(("message", "lost"), [
    ("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:44944.", True),
    ("[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:44946: Connection reset by peer.", True),
    ("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation to complete", True),
    ("mat1 and mat2 shapes cannot be multiplied (4x32 and 16x8)", False),
])
def test_lost_peers_are_told_from_other_errors(message, lost):
    # The messages are those gloo raised here when a peer was SIGKILLed, or stopped past the timeout.
    assert is_lost_peer(RuntimeError(message)) is lost


def test_preemption_is_a_flag_inside_and_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptionFlag() as preemption:
        assert not preemption.raised
        os.kill(os.getpid(), signal.SIGUSR1)  # what SLURM sends before the end of a job's time
        assert preemption.raised
    assert signal.getsignal(signal.SIGUSR1) is before

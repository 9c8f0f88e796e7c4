"""benchmarks/command_cost.py: a command's wall time and its process tree's peak memory, children included."""

import sys

import pytest

from benchmarks.command_cost import measured

# A parent that holds 100 MB and a child that holds 200 MB more, both alive for half a second.
TREE = """
import subprocess, sys, time
held = bytearray(100_000_000)
child = subprocess.Popen([sys.executable, "-c", "import time; held = bytearray(200_000_000); time.sleep(0.8)"])
time.sleep(0.5)
child.wait()
print("done")
"""


def test_the_peak_counts_every_process_of_the_tree_and_the_clock_the_whole_command():
    cost = measured([sys.executable, "-c", TREE], env={})
    assert cost["stdout"] == "done\n" and cost["seconds"] >= 0.8
    # bytearray's pages are written (zeroed), so both are resident and anonymous: at least 300 MB together
    assert cost["peak_rss_bytes"] >= 300e6 and cost["peak_anonymous_bytes"] >= 300e6


def test_a_failing_command_ends_the_benchmark_with_its_stderr():
    with pytest.raises(SystemExit, match="boom"):
        measured([sys.executable, "-c", "raise SystemExit('boom')"], env={})


@pytest.mark.timeout(30)
def test_a_timed_run_is_not_sampled_and_a_chatty_command_is_never_blocked_on_its_output():
    """Progress bars write more to stderr than a pipe holds (64 KB); the command must still run to its end."""
    chatty = "import sys; sys.stderr.write('x' * 300_000); print('done')"
    timed = measured([sys.executable, "-c", chatty], env={}, sample_memory=False)
    assert timed["stdout"] == "done\n" and timed["peak_rss_bytes"] is None and timed["peak_anonymous_bytes"] is None
    sampled = measured([sys.executable, "-c", chatty], env={})
    assert sampled["stdout"] == "done\n" and sampled["peak_rss_bytes"] > 0

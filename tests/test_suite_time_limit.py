"""pyproject.toml's per-test time limit: a test that hangs fails with every thread's stack, and the suite goes on."""

import subprocess
import sys
import time

from support.paths import REPO_ROOT

HANGING_TESTS = '''
import threading
import time


def test_hangs():
    threading.Thread(target=time.sleep, args=(600,), name="a-helper-thread", daemon=True).start()
    threading.Event().wait()  # what a stalled collective or a pool that cannot end looks like from here


def test_after_it():
    assert True
'''


def test_a_hanging_test_fails_with_every_threads_stack_and_the_next_one_runs(tmp_path):
    (tmp_path / "test_hanging.py").write_text(HANGING_TESTS)
    started = time.monotonic()
    # The project's own configuration (its rootdir and ini: the signal method, which fails the hanging test alone),
    # with the limit lowered so the self-test is quick.
    done = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_hanging.py"), "-c",
                           str(REPO_ROOT / "pyproject.toml"), "--rootdir", str(REPO_ROOT), "-o", "timeout=3", "-q",
                           "-p", "no:cacheprovider"], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert done.returncode == 1, done.stdout[-3000:]
    assert "1 failed, 1 passed" in done.stdout
    assert "Failed: Timeout (>3.0s) from pytest-timeout." in done.stdout
    # Every thread's stack: the test's own in the failure, each other thread's under "Stack of".
    assert "test_hanging.py:8: " in done.stdout and "Stack of a-helper-thread" in done.stdout

"""Every status the kit's commands (`run_pretrain.py`, `prepare_data.py`) end with, what it means, and what a job
script does about it.

The README's table of statuses is this table (a test holds them equal); job scripts requeue on 75 and 76, and
retry 69 later.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    BAD_SETTING = 2
    NONFINITE = 3
    CHECKPOINT_FAILED = 4
    UPLOAD_FAILED = 5
    OUT_OF_MEMORY = 6
    SOURCE_UNAVAILABLE = 69  # EX_UNAVAILABLE: "a service is unavailable"
    PREEMPTED = 75  # EX_TEMPFAIL: "try again"
    STALLED = 76


# status: (what it means, what a job script does)
MEANING = {
    ExitCode.OK: ("trained and saved", "done"),
    ExitCode.BAD_SETTING: ("a bad setting or data, refused before training", "fix the command"),
    ExitCode.NONFINITE: ("non-finite loss or gradients (`--on_nonfinite stop`)",
                         "look at the log; resume from an earlier checkpoint"),
    ExitCode.CHECKPOINT_FAILED: ("a checkpoint could not be written (disk full)", "free space, then resume"),
    ExitCode.UPLOAD_FAILED: ("trained and saved, the hub upload failed", "run the printed `hf upload` command"),
    ExitCode.OUT_OF_MEMORY: ("out of device memory at a fixed micro-batch",
                             "`--micro_batch_size auto` or a smaller one"),
    ExitCode.SOURCE_UNAVAILABLE: ("prepare_data.py: the hub kept failing past the retries (429, 5xx, timeouts, "
                                  "content not matching its digest); downloads kept",
                                  "run the same command later: it fetches only what is missing"),
    ExitCode.PREEMPTED: ("preempted (SIGTERM, SIGUSR1): checkpoint saved", "requeue, resume"),
    ExitCode.STALLED: ("a rank stalled, or a peer process was lost", "requeue, resume"),
}

"""formats/run_log.py: what the loop writes to log.jsonl is what plots, model cards and benchmarks read back."""

import json

from support.corpus import write_jsonl

from formats.run_log import LOG_FILE, RunLog, read_log


class Trackers:
    """Stands in for an Accelerator: which process this is, and what reached its trackers."""

    def __init__(self, is_main_process=True):
        self.is_main_process, self.logged = is_main_process, []

    def log(self, values, step):
        self.logged.append((step, values))


def test_records_written_are_read_back_by_type_and_numbers_reach_the_trackers(tmp_path):
    trackers = Trackers()
    log = RunLog(trackers, tmp_path)
    log.write("train", 1, loss=5.5, lr=1e-3, epoch=0)
    log.write("samples", 1, samples=["a", "b"])
    log.write("eval", 2, val_loss=4.25)
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [(r["type"], r["step"]) for r in lines] == [("train", 1), ("samples", 1), ("eval", 2)]
    records = read_log(tmp_path / LOG_FILE)
    assert records["train"][0]["loss"] == 5.5 and records["samples"][0]["samples"] == ["a", "b"]
    assert records["eval"] == [{"type": "eval", "step": 2, "time": lines[2]["time"], "val_loss": 4.25}]
    # numbers only, each under its type: text samples never reach a tracker
    assert trackers.logged == [(1, {"train/loss": 5.5, "train/lr": 1e-3, "train/epoch": 0}),
                               (2, {"eval/val_loss": 4.25})]


def test_only_the_main_process_writes(tmp_path):
    RunLog(Trackers(is_main_process=False), tmp_path).write("train", 1, loss=1.0)
    assert not (tmp_path / LOG_FILE).exists()


def test_a_resumed_runs_repeated_steps_keep_their_last_record_in_step_order(tmp_path):
    write_jsonl(tmp_path / LOG_FILE, [{"type": "eval", "step": s, "val_loss": 10 - s} for s in (2, 4, 6)]
                + [{"type": "resume", "step": 4}, {"type": "eval", "step": 6, "val_loss": 3.5},
                   {"type": "eval", "step": 5, "val_loss": 4.5}])
    records = read_log(tmp_path / LOG_FILE)
    assert [(r["step"], r["val_loss"]) for r in records["eval"]] == [(2, 8), (4, 6), (5, 4.5), (6, 3.5)]
    assert records["resume"] == [{"type": "resume", "step": 4}]

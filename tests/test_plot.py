"""eval/plot.py: a run's log drawn as curves."""

import warnings

from support.corpus import write_jsonl

from eval import plot


def test_plot_draws_the_run(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"type": "train", "step": s, "loss": 10 - s / 10} for s in range(1, 50)]
    records += [{"type": "eval", "step": s, "val_loss": 10 - s / 12} for s in (10, 20, 30, 40)]
    records += [{"type": "hellaswag", "step": s, "acc": 0.25 + s / 1000, "acc_norm": 0.26 + s / 900} for s in (20, 40)]
    write_jsonl(log, records)
    out = plot.plot_run(log, tmp_path / "curves.png", {"baseline": 7.5})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_a_run_that_logged_no_loss_is_drawn_without_a_warning(tmp_path):
    log = tmp_path / "log.jsonl"
    write_jsonl(log, [{"type": "setup", "step": 0}])  # --log_every -1 --eval_every -1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matplotlib's, of a legend with nothing to name
        out = plot.plot_run(log, tmp_path / "curves.png", {})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

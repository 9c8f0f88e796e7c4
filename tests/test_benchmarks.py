"""The benchmarks run end to end (their figures come from real runs, recorded in benchmarks/RESULTS.md)."""

import sys

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def test_throughput_tiny_mode_measures_both_models(tmp_path):
    import throughput

    report = throughput.main(["--tiny", "--steps", "2", "--warmup", "1", "--output", str(tmp_path / "r.json")])
    assert [r["model"] for r in report["results"]] == ["ours", "stock"]
    assert all(r["tokens_per_second"] > 0 and r["ms_per_step"] > 0 for r in report["results"])
    assert report["ratio_ours_over_stock"] > 0 and (tmp_path / "r.json").exists()
    assert report["results"][0]["parameters"] > 0 and report["device"] == "cpu"


@pytest.mark.slow
def test_prepare_data_speed_runs_both_pipelines(shared_data, capsys):
    import prepare_data_speed

    prepare_data_speed.main(["--data_dir", str(shared_data), "--copies", "1", "--repeats", "1", "--num_proc", "2"])
    out = capsys.readouterr().out
    assert "ratio ours / baseline:" in out and "1,809," in out  # the same token count on both sides

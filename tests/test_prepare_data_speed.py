"""benchmarks/prepare_data_speed.py: our pipelines against the reproduction's, side by side."""

import pytest

from benchmarks import prepare_data_speed


@pytest.mark.slow
def test_prepare_data_speed_runs_all_three_pipelines(shared_data, capsys):
    prepare_data_speed.main(["--data_dir", str(shared_data), "--copies", "1", "--repeats", "1", "--num_proc", "2"])
    out = capsys.readouterr().out
    assert "corpus: 1,809,929 tokens" in out  # main() stops if the three pipelines' token counts differ
    assert out.count("ratio to baseline") == 3 and "--streaming" in out

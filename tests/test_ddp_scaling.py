"""benchmarks/ddp_scaling.py: weak scaling through accelerate launch (gloo on CPU)."""

import json

import pytest

from benchmarks import ddp_scaling


@pytest.mark.slow
def test_ddp_scaling_runs_one_and_two_gloo_processes(tmp_path):
    scaling = ddp_scaling.main(["--processes", "1,2", "--tiny", "--steps", "2", "--warmup", "1",
                                "--output", str(tmp_path / "s.json")])
    one, two = scaling["runs"]
    assert (one["processes"], two["processes"], one["efficiency"]) == (1, 2, 1.0)
    # what each launched benchmark itself reported: two processes really took part in the second run
    assert (one["processes_reported"], two["processes_reported"]) == (1, 2)
    assert json.loads((tmp_path / "s.json").read_text()) == scaling

"""benchmarks/optimizer_comparison.py: the AdamW / Muon sweep and its RESULTS.md section."""

from benchmarks import optimizer_comparison


def test_tokens_to_reach_interpolates_between_evaluations():
    curve = [(100, 5.0), (200, 4.0), (300, 3.5)]
    assert optimizer_comparison.tokens_to_reach(curve, 4.5) == 150  # halfway between 5.0 and 4.0
    assert optimizer_comparison.tokens_to_reach(curve, 3.75) == 250
    assert optimizer_comparison.tokens_to_reach(curve, 5.5) == 100  # reached by the first evaluation
    assert optimizer_comparison.tokens_to_reach(curve, 3.0) is None


def test_optimizer_comparison_runs_the_sweep_and_writes_its_section(tiny_data, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Measured results\n\nearlier text\n")
    args = ["--data_dir", str(tiny_data), "--output_dir", str(tmp_path / "runs"), "--steps", "4", "--eval_every", "2",
            "--warmup_steps", "1", "--eval_tokens", "512", "--adamw_lrs", "3e-3", "--muon_lrs", "3e-3",
            "--no-variants", "--results", str(results)]
    text = optimizer_comparison.main(args)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["adamw-lr0.003-seed1337", "muon-lr0.003-seed1337"]
    rows = [line for line in text.splitlines() if line.startswith(("| adamw", "| muon"))]
    assert len(rows) == 2 and sum("**(best)**" in row for row in rows) == 2
    assert (tmp_path / "optimizer_comparison.png").stat().st_size > 0
    optimizer_comparison.main(args)  # finished runs are reused, and the section is replaced, not added again
    content = results.read_text()
    assert content.startswith("# Measured results\n\nearlier text\n")
    assert content.count(optimizer_comparison.MARK_START) == 1 and text in content

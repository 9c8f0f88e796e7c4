"""The benchmarks run end to end (their figures come from real runs, recorded in benchmarks/RESULTS.md)."""

import pytest
import torch


def test_throughput_tiny_mode_measures_and_profiles_both_models(tmp_path):
    from benchmarks import throughput

    report = throughput.main(["--tiny", "--steps", "2", "--warmup", "1", "--output", str(tmp_path / "r.json")])
    ours, stock = report["results"]
    assert (ours["model"], stock["model"]) == ("ours", "stock") and report["device"] == "cpu"
    assert all(r["tokens_per_second"] > 0 and r["ms_per_step"] > 0 for r in report["results"])
    assert report["ratio_ours_over_stock"] > 0 and (tmp_path / "r.json").exists()
    assert ours["parameters"] > 0 and ours["tokens_per_second_per_process"] == ours["tokens_per_second"]
    # The loop's step never waits on the device inside forward, backward or clipping.
    assert ours["host_reads_in_train_step"] == 0
    # SDPA ran its fused (flash) kernel for our model, forward and backward, and matmuls lead the profile.
    assert ours["profile"]["attention_backend"] == ["flash"]
    assert any(op["name"] in ("aten::mm", "aten::addmm") for op in ours["profile"]["top"][:3])
    assert abs(sum(op["share"] for op in ours["profile"]["top"]) - 1) < 0.3


def test_a_model_running_out_of_memory_is_reported_and_the_other_still_measured(monkeypatch, capsys):
    from benchmarks import throughput

    real_build = throughput.build

    def build(kind, *args):
        if kind == "stock":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.27 GiB.\nmore detail")
        return real_build(kind, *args)

    monkeypatch.setattr(throughput, "build", build)
    report = throughput.main(["--tiny", "--steps", "1", "--warmup", "1", "--profile_steps", "0"])
    ours, stock = report["results"]
    assert ours["tokens_per_second"] > 0 and "ratio_ours_over_stock" not in report
    assert stock == {"model": "stock", "error": "CUDA out of memory. Tried to allocate 12.27 GiB."}
    assert " stock: CUDA out of memory" in capsys.readouterr().out


def test_host_read_counter_sees_item_bool_and_nonzero():
    from benchmarks import throughput

    x = torch.arange(4.0)
    with throughput.HostReads() as reads:
        y = (x * 2).sum()  # stays on the device
        y.item()
        bool(x[1] > 0)
        x.nonzero()
    assert reads.count == 3


def test_sdpa_backend_names_match_torch_operators():
    from benchmarks import throughput

    names = {"_scaled_dot_product_flash_attention": "flash", "_scaled_dot_product_flash_attention_for_cpu": "flash",
             "_scaled_dot_product_cudnn_attention": "cuDNN", "_scaled_dot_product_efficient_attention":
             "memory-efficient", "_scaled_dot_product_attention_math": "math"}
    for op, backend in names.items():
        assert hasattr(torch.ops.aten, op), op  # the profiler shows these operator names
        assert throughput.sdpa_backend(f"aten::{op}") == backend


def test_data_loading_reads_the_loops_batches_with_and_without_workers(tiny_data):
    from benchmarks import data_loading

    report = data_loading.main(["--data_dir", str(tiny_data), "--micro_batch", "4", "--workers", "0,1",
                                "--batches", "5", "--repeats", "1"])
    assert [r["workers"] for r in report["results"]] == [0, 1]
    assert all(r["tokens_per_second"] > 0 and r["gpus_fed"] == r["tokens_per_second"] / 500_000
               for r in report["results"])


@pytest.mark.slow
def test_ddp_scaling_runs_one_and_two_gloo_processes(tmp_path):
    from benchmarks import ddp_scaling

    scaling = ddp_scaling.main(["--processes", "1,2", "--tiny", "--steps", "2", "--warmup", "1",
                                "--output", str(tmp_path / "s.json")])
    one, two = scaling["runs"]
    assert (one["processes"], two["processes"], one["efficiency"]) == (1, 2, 1.0)
    assert two["tokens_per_second"] == pytest.approx(2 * two["tokens_per_second_per_process"])
    assert 0 < two["efficiency"] < 2 and (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_prepare_data_speed_runs_all_three_pipelines(shared_data, capsys):
    from benchmarks import prepare_data_speed

    prepare_data_speed.main(["--data_dir", str(shared_data), "--copies", "1", "--repeats", "1", "--num_proc", "2"])
    out = capsys.readouterr().out
    assert "corpus: 1,809,929 tokens" in out  # main() stops if the three pipelines' token counts differ
    assert out.count("ratio to baseline") == 3 and "--streaming" in out


def test_tokens_to_reach_interpolates_between_evaluations():
    from benchmarks import optimizer_comparison

    curve = [(100, 5.0), (200, 4.0), (300, 3.5)]
    assert optimizer_comparison.tokens_to_reach(curve, 4.5) == 150  # halfway between 5.0 and 4.0
    assert optimizer_comparison.tokens_to_reach(curve, 3.75) == 250
    assert optimizer_comparison.tokens_to_reach(curve, 5.5) == 100  # reached by the first evaluation
    assert optimizer_comparison.tokens_to_reach(curve, 3.0) is None


def test_optimizer_comparison_runs_the_sweep_and_writes_its_section(tiny_data, tmp_path):
    from benchmarks import optimizer_comparison

    results = tmp_path / "RESULTS.md"
    results.write_text("# Measured results\n\nearlier text\n")
    args = ["--data_dir", str(tiny_data), "--output_dir", str(tmp_path / "runs"), "--steps", "4", "--eval_every", "2",
            "--warmup_steps", "1", "--eval_tokens", "512", "--adamw_lrs", "1e-3,3e-3", "--muon_lrs", "3e-3",
            "--no-variants", "--results", str(results)]
    text = optimizer_comparison.main(args)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "adamw-lr0.001-seed1337", "adamw-lr0.003-seed1337", "muon-lr0.003-seed1337"]
    rows = [line for line in text.splitlines() if line.startswith(("| adamw", "| muon"))]
    assert len(rows) == 3 and sum("**(best)**" in row for row in rows) == 2
    assert (tmp_path / "optimizer_comparison.png").stat().st_size > 0
    optimizer_comparison.main(args)  # finished runs are reused, and the section is replaced, not added again
    content = results.read_text()
    assert content.startswith("# Measured results\n\nearlier text\n")
    assert content.count(optimizer_comparison.MARK_START) == 1 and text in content

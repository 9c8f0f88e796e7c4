"""benchmarks/throughput.py: the loop's real step timed for ours and stock, with its profile."""

import json
import time

import torch

from benchmarks import throughput


def test_throughput_tiny_mode_measures_and_profiles_both_models(tmp_path):
    started = time.perf_counter()
    report = throughput.main(["--tiny", "--steps", "2", "--warmup", "1", "--output", str(tmp_path / "r.json")])
    elapsed = time.perf_counter() - started
    ours, stock = report["results"]
    assert (ours["model"], stock["model"]) == ("ours", "stock") and report["device"] == "cpu"
    # Each model's 3 steps (1 warm-up, 2 timed) took place inside this call: an outside clock bounds them.
    assert sum(3 * result["ms_per_step"] / 1000 for result in report["results"]) < elapsed
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["model"] == "ours"
    # 2 layers x 128 wide, vocabulary 2,048 (already a multiple of 64), 128 positions, tied head, by hand:
    # embeddings 2048 x 128 + 128 x 128; per block 2 LayerNorms (512), QKV 128 x 384 + 384, projection
    # 128 x 128 + 128, MLP 128 x 512 + 512 and 512 x 128 + 128; the final LayerNorm 256.
    per_block = 512 + 128 * 384 + 384 + 128 * 128 + 128 + 128 * 512 + 512 + 512 * 128 + 128
    assert ours["parameters"] == stock["parameters"] == 2048 * 128 + 128 * 128 + 2 * per_block + 256
    # The loop's step never waits on the device inside forward, backward or clipping.
    assert ours["host_reads_in_train_step"] == 0
    # SDPA ran its fused (flash) kernel for our model, forward and backward, and matmuls lead the profile.
    assert ours["profile"]["attention_backend"] == ["flash"]
    assert any(op["name"] in ("aten::mm", "aten::addmm") for op in ours["profile"]["top"][:3])


def test_a_model_running_out_of_memory_is_reported_and_the_other_still_measured(monkeypatch, capsys):
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

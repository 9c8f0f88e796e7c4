"""training/measurement.py: model FLOPs by hand, the throughput meter's clock, host reads and SDPA's names."""


import torch
from support.tiny import tiny_config

from configuration import GPT2ScratchConfig
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training import measurement


def on_meta(config: GPT2ScratchConfig) -> GPT2ScratchForCausalLM:
    with torch.device("meta"):  # shapes without memory: 124M costs nothing here
        return GPT2ScratchForCausalLM(config)


def test_flops_per_token_of_gpt2_124m_by_hand():
    gpt2 = on_meta(GPT2ScratchConfig(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, n_positions=1024))
    # 12 layers x (3*768^2 attention in + 768^2 out + 2 x 4*768^2 MLP) + 50,257 x 768 head, 6 FLOPs each,
    # plus 12 layers x 12 x 768 x 1024 for the attention scores and mixing.
    assert measurement.flops_per_token(gpt2, 1024) == 6 * (12 * 12 * 768**2 + 50257 * 768) + 12 * 12 * 768 * 1024
    assert measurement.flops_per_token(gpt2, 1024) == 854_438_400


def test_flops_follow_the_models_own_mlp_width_and_count_stock_alike():
    model = GPT2ScratchForCausalLM(tiny_config(n_inner=50))  # not 4 x 36
    # Every 2-D weight inside the blocks is a matmul's, counted here from the parameters themselves.
    block_weights = sum(p.numel() for name, p in model.named_parameters() if ".h." in name and p.dim() == 2)
    assert block_weights == 3 * (36 * 108 + 36 * 36 + 36 * 50 + 50 * 36)
    expected = 6 * (block_weights + 101 * 36) + 12 * 3 * 36 * 16
    assert measurement.flops_per_token(model, 16) == expected
    assert measurement.flops_per_token(model.to_gpt2(), 16) == expected  # stock's padded-free head, same count


def test_throughput_meter_leaves_out_paused_time(accelerator, monkeypatch):
    clock = iter([100.0, 101.0, 104.0, 105.0, 200.0])  # start; pause 101-104; report at 105; restart
    monkeypatch.setattr(measurement.time, "perf_counter", lambda: next(clock))
    model = GPT2ScratchForCausalLM(tiny_config())
    meter = measurement.ThroughputMeter(model, 16, tokens_per_step=512, accelerator=accelerator)
    meter.steps = 4
    with meter.paused():
        pass
    report = meter.report()
    assert report["tokens_per_second"] == 4 * 512 / 2.0  # 5 s of wall clock, 3 of them paused
    assert report["mfu"] is None and (meter.steps, meter.excluded) == (0, 0.0)


def test_host_read_counter_sees_item_bool_and_nonzero():
    x = torch.arange(4.0)
    with measurement.HostReads() as reads:
        y = (x * 2).sum()  # stays on the device
        y.item()
        bool(x[1] > 0)
        x.nonzero()
    assert reads.count == 3


def test_sdpa_backend_names_match_torch_operators():
    names = {"_scaled_dot_product_flash_attention": "flash", "_scaled_dot_product_flash_attention_for_cpu": "flash",
             "_scaled_dot_product_cudnn_attention": "cuDNN", "_scaled_dot_product_efficient_attention":
             "memory-efficient", "_scaled_dot_product_attention_math": "math"}
    for op, backend in names.items():
        assert hasattr(torch.ops.aten, op), op  # the profiler shows these operator names
        assert measurement.sdpa_backend(f"aten::{op}") == backend

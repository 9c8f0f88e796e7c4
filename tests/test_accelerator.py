"""training/accelerator.py: Accelerate's DDP, compile and communication settings, as the run asks for them."""

import os
import subprocess
import sys

import torch
from support.paths import REPO_ROOT
from support.tiny import adamw_config

from training.accelerator import compile_plugin, ddp_settings


def test_accelerator_carries_the_ddp_and_compile_settings():
    config = adamw_config(ddp_bucket_cap_mb=100, compile=True, compile_mode="reduce-overhead", report_to="none")
    assert (compile_plugin(config).backend.value, compile_plugin(config).mode) == (
        "INDUCTOR", "reduce-overhead")
    assert compile_plugin(adamw_config(compile=False)) is None
    ddp = ddp_settings(config)
    assert (ddp.bucket_cap_mb, ddp.gradient_as_bucket_view, ddp.comm_hook.value) == (100, True, "no")
    assert ddp_settings(adamw_config(ddp_comm_hook="bf16")).comm_hook.value == "bf16"


def all_reduced_gradient(hook: str, tmp_path) -> torch.Tensor:
    """Rank 0's weight gradient after a real 2-process gloo all-reduce through `ddp_settings`' hook."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", DDP_HOOK_WORKER, hook, str(rank), str(tmp_path / f"{rank}.pt")],
                                cwd=REPO_ROOT, env={**env, "RANK": str(rank)}, stderr=subprocess.PIPE, text=True)
               for rank in range(2)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()[-3000:]
    return torch.load(tmp_path / "0.pt")


def test_fp16_communication_hook_all_reduces_gradients_in_fp16(tmp_path):
    """The compressing hooks run through the same path; bf16's is refused by DDP without CUDA and NCCL."""
    local = []  # each rank's own gradient, computed here without DDP
    for rank in range(2):
        torch.manual_seed(0)
        layer = torch.nn.Linear(16, 8)
        layer(torch.randn(4, 16, generator=torch.Generator().manual_seed(rank))).pow(2).sum().backward()
        local.append(layer.weight.grad)
    mean = (local[0] + local[1]) / 2
    # The hook casts each rank's gradient to fp16 and halves it; the sum of two fp16 values is rounded once.
    in_fp16 = (local[0].half() / 2 + local[1].half() / 2).float()
    assert not torch.equal(in_fp16, mean)
    assert torch.equal(all_reduced_gradient("no", tmp_path), mean)
    assert torch.equal(all_reduced_gradient("fp16", tmp_path), in_fp16)


DDP_HOOK_WORKER = """
import sys, torch, torch.distributed as dist
from training.accelerator import ddp_settings
from training.arguments import parse_config
hook, rank, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo")
torch.manual_seed(0)
layer = torch.nn.Linear(16, 8)
ddp = torch.nn.parallel.DistributedDataParallel(layer)
ddp_settings(parse_config([f"--ddp_comm_hook={hook}"])).register_comm_hook(ddp)
ddp(torch.randn(4, 16, generator=torch.Generator().manual_seed(rank))).pow(2).sum().backward()
torch.save(layer.weight.grad, out)
"""

"""training/optimizer.py: Muon + AdamW grouping and steps against torch's own optimizers, schedules, exact resume,
and the same training over DDP and FSDP2 as in one process."""

import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from support.paths import REPO_ROOT
from support.runs import losses_in, run_together
from support.tiny import adamw_config, tiny_config, tiny_run_args
from transformers import AutoModelForCausalLM

import run_pretrain
from eval.parity import assert_same_network
from formats.packed_data import inputs_and_targets, score_next_tokens
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.accelerator import CPU_LAUNCH_ENV, launch_command
from training.arguments import parse_config
from training.optimizer import HIDDEN_MATRICES, build_optimizer
from training.step import finish_step, train_step

MUON = dict(optimizer="muon", learning_rate=2e-3, muon_learning_rate=1e-2, embedding_learning_rate=5e-3,
            warmup_steps=0, max_steps=100, mixed_precision="no")


def config_for(**overrides):
    return parse_config([f"--{key}={value}" for key, value in {**MUON, **overrides}.items()])


@pytest.fixture
def accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


def rows(batch=4, length=17, seed=0):
    return torch.randint(0, 101, (batch, length), generator=torch.Generator().manual_seed(seed))


def one_step(model, optimizer, config, accelerator, batch):
    result = train_step(model, iter([(batch[:, :-1], batch[:, 1:])]), 1, config, accelerator)
    finish_step(optimizer, result, False, accelerator)


def test_muon_trains_the_blocks_matrices_and_adamw_the_rest(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizers = build_optimizer(model, config_for(), accelerator.device)
    muon, adamw = optimizers.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): name for name, p in model.named_parameters()}
    groups = {g["name"]: [names[id(p)] for p in g["params"]] for g in optimizers.param_groups}
    assert sorted(groups["hidden_matrices"]) == sorted(f"transformer.h.{i}.{suffix}" for i in range(3)
                                                       for suffix in HIDDEN_MATRICES)
    assert sorted(groups["embeddings"]) == ["transformer.wpe.weight", "transformer.wte.weight"]  # the tied head too
    assert all(names_p.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight")) for names_p in groups["vectors"])
    every = [name for group in groups.values() for name in group]
    assert sorted(every) == sorted(names.values())  # each trainable parameter exactly once
    assert optimizers.learning_rates() == {"hidden_matrices": 1e-2, "embeddings": 5e-3, "vectors": 2e-3}
    decay = {g["name"]: g["weight_decay"] for g in optimizers.param_groups}
    assert decay == {"hidden_matrices": 0.1, "embeddings": 0.1, "vectors": 0.0}


def test_muon_step_is_torch_muon_on_the_matrices_and_adamw_on_the_rest(accelerator):
    """The reference: torch's Muon and AdamW built by hand over the same parameters, stepped with the same gradients."""
    ours = GPT2ScratchForCausalLM(tiny_config())
    reference = GPT2ScratchForCausalLM(tiny_config())
    reference.load_state_dict(ours.state_dict())
    config = config_for(muon_adjust_lr="original")
    optimizers = build_optimizer(ours, config, accelerator.device)
    named = dict(reference.named_parameters())
    hidden = [p for n, p in named.items() if n.endswith(HIDDEN_MATRICES)]
    embeddings = [named["transformer.wte.weight"], named["transformer.wpe.weight"]]
    vectors = [p for p in named.values() if p.dim() == 1]
    by_hand = [torch.optim.Muon(hidden, lr=1e-2, weight_decay=0.1, momentum=0.95, adjust_lr_fn="original"),
               torch.optim.AdamW([{"params": embeddings, "lr": 5e-3, "weight_decay": 0.1},
                                  {"params": vectors, "weight_decay": 0.0}], lr=2e-3, betas=(0.9, 0.95), eps=1e-8)]
    for step in range(3):
        batch = rows(seed=step)
        one_step(ours, optimizers, config, accelerator, batch)
        score_next_tokens(reference, *inputs_and_targets(batch)).loss.backward()  # the training step's loss call
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        for optimizer in by_hand:
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_split_qkv_orthogonalizes_query_key_and_value_apart(accelerator):
    """With muon_qkv split, c_attn's update is Muon's on three C x C matrices; whole stacks them (and differs)."""
    torch.manual_seed(1)
    base = GPT2ScratchForCausalLM(tiny_config())
    updated = {}
    for mode in ("split", "whole"):
        model = GPT2ScratchForCausalLM(tiny_config())
        model.load_state_dict(base.state_dict())
        config = config_for(muon_qkv=mode)
        one_step(model, build_optimizer(model, config, accelerator.device), config, accelerator, rows())
        updated[mode] = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    grad_model = GPT2ScratchForCausalLM(tiny_config())
    grad_model.load_state_dict(base.state_dict())
    batch = rows()
    score_next_tokens(grad_model, *inputs_and_targets(batch)).loss.backward()
    torch.nn.utils.clip_grad_norm_(grad_model.parameters(), 1.0)
    qkv = grad_model.transformer.h[0].attn.c_attn.weight
    parts = [torch.nn.Parameter(part.detach().clone()) for part in qkv.detach().chunk(3)]
    for part, grad in zip(parts, qkv.grad.chunk(3), strict=True):
        part.grad = grad.clone()
    torch.optim.Muon(parts, lr=1e-2, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw").step()
    torch.testing.assert_close(updated["split"], torch.cat([p.detach() for p in parts]), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(updated["split"], updated["whole"], atol=1e-4)


def test_schedules_and_momentum_warmup(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizers = build_optimizer(model, config_for(lr_schedule="wsd", decay_fraction=0.2, warmup_steps=10,
                                                   min_lr_ratio=0.1, muon_momentum_warmup_steps=50),
                                 accelerator.device)
    lrs, momenta = [], []
    for _ in range(101):
        lrs.append(optimizers.learning_rates())
        momenta.append(optimizers.optimizers[0].param_groups[0]["momentum"])
        optimizers.step()  # no gradients: changes nothing
        optimizers.schedule_step()
    vectors = [lr["vectors"] for lr in lrs]
    assert vectors[10] == pytest.approx(2e-3) and vectors[50] == pytest.approx(2e-3) and vectors[80] == 2e-3
    assert vectors[90] == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5))  # halfway down the linear decay
    assert vectors[100] == pytest.approx(2e-4)
    assert all(lr["hidden_matrices"] / lr["vectors"] == pytest.approx(5) for lr in lrs[1:])  # one schedule for all
    assert momenta[0] == pytest.approx(0.85) and momenta[25] == pytest.approx(0.90)
    assert momenta[60] == pytest.approx(0.95)


@pytest.mark.parametrize("settings", [
    dict(optimizer="muon", muon_momentum_warmup_steps=4, lr_schedule="wsd"),
    dict(optimizer="muon", muon_qkv="split"),
], ids=["muon-wsd-momentum", "muon-split"])
def test_muon_run_resumes_bit_for_bit_and_saves_a_plain_gpt2(tiny_data, tmp_path, settings):
    """Both optimizers' states and both schedules go through the checkpoint: resumed at step 3, steps 4-6 and
    the final weights equal the uninterrupted run's. The trained model converts to stock GPT-2 exactly."""
    common = dict(max_steps=6, save_every=3, eval_every=6, muon_learning_rate=1e-2, **settings)
    straight = tmp_path / "straight"
    assert run_pretrain.main(tiny_run_args(tiny_data, straight, **common)) == 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoints" / "step_0000003", resumed / "step_0000003")
    assert run_pretrain.main(tiny_run_args(tiny_data, resumed / "run", resume_from_checkpoint=resumed / "step_0000003",
                                           **common)) == 0
    losses = {run: losses_in(run)
              for run in (straight, resumed / "run")}
    assert losses[resumed / "run"] == losses[straight][3:]
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(resumed / "run" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # final/ is a plain GPT-2 converted from the trained weights: it scores as they do in our class
    ours = GPT2ScratchForCausalLM.from_pretrained(straight / "final")
    missing, unexpected = ours.load_state_dict(load_file(straight / "checkpoints" / "step_0000006" /
                                                         "model.safetensors"), strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected  # the head is tied to the embedding
    ours.eval()
    stock = AutoModelForCausalLM.from_pretrained(straight / "final").eval()
    ids = rows(2, 20, seed=5) % ours.config.vocab_size
    with torch.no_grad():
        assert_same_network(ours(ids).logits, stock(ids).logits)


@pytest.mark.slow
@pytest.mark.parametrize("qkv", ["whole", "split"])
def test_muon_over_two_ddp_processes_matches_one_process(tiny_data, tmp_path, qkv):
    """2 gloo processes x 1 micro-step against 1 process x 2: the same all-reduced gradients, the same updates.
    Muon orthogonalizes in bfloat16 (torch's Newton-Schulz): a gradient that differs in float32's last bits
    (another summation order) can round one bf16 step (2**-8) apart there, so the losses agree to 1e-3
    relative, not bit for bit (measured: 0 with `whole`, up to 3e-4 with `split`). Gradients that were not
    all-reduced, or updates that missed the model's tensors, move the losses by 1e-2 and more."""
    def command(processes):
        args = tiny_run_args(tiny_data, tmp_path / str(processes), micro_batch_size=4, total_batch_tokens=8 * 32,
                             max_steps=6, eval_every=6, save_every=0, optimizer="muon", muon_learning_rate=1e-2,
                             muon_qkv=qkv)
        return launch_command("run_pretrain.py", processes, *args)

    losses = {}
    runs = run_together([command(1), command(2)], env={**os.environ, **CPU_LAUNCH_ENV})
    for processes, done in zip((1, 2), runs, strict=True):
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{processes} processes" in done.stdout
        losses[processes] = [loss for _, loss in losses_in(tmp_path / str(processes))]
    assert len(losses[1]) == 6
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-3)


FSDP2_WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    # torch's Newton-Schulz casts to bfloat16; in float32 the sharded and the whole computation must agree closely.
    torch.Tensor.bfloat16 = torch.Tensor.float
    sys.path[:0] = [".", "tests"]
    from support.tiny import tiny_config
    from modeling_gpt2_scratch import GPT2ScratchForCausalLM
    from training.arguments import parse_config
    from training.optimizer import build_optimizer
    out, sharded = sys.argv[1], dist.is_torchelastic_launched()
    if sharded:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = GPT2ScratchForCausalLM(tiny_config(n_embd=48, n_head=4))
    if sharded:  # as accelerate_configs/fsdp2.yaml shards: each GPT2ScratchBlock, then the root
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    config = parse_config(["--optimizer=muon", "--muon_learning_rate=1e-2", "--learning_rate=1e-2",
                           "--warmup_steps=0", "--max_steps=10"])
    optimizers = build_optimizer(model, config, torch.device("cpu"))
    batch = torch.randint(0, 101, (4, 17), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        mine = batch[2 * dist.get_rank(): 2 * dist.get_rank() + 2] if sharded else batch
        model(mine[:, :-1], labels=mine[:, 1:], shift_labels=mine[:, 1:]).loss.backward()
        optimizers.step()
        optimizers.zero_grad()
        optimizers.schedule_step()
    state = {name: (p.full_tensor() if sharded else p).detach() for name, p in model.named_parameters()}
    if not sharded or dist.get_rank() == 0:
        torch.save(state, out)
""")


@pytest.mark.slow
def test_muon_on_fsdp2_sharded_parameters_matches_one_process(tmp_path):
    """FSDP2 (torch's fully_shard, per GPT2ScratchBlock as the shipped fsdp2.yaml) over two gloo processes: Muon works
    on the sharded DTensors as on whole matrices. (Accelerate enables FSDP only on GPUs; this is the same sharding.)
    The workers run torch's Newton-Schulz in float32: then every parameter's change after three steps agrees
    with one process's to 1e-3 (measured 2e-4 at most). In bfloat16, as in training, the sharded matmuls
    round differently and the Muon matrices differ by 3-6% of their change (orthogonalizing each shard on
    its own would differ by about 100%)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = tmp_path / "worker.py"
    script.write_text(FSDP2_WORKER)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt")], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                          str(tmp_path / "two.pt")], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    whole, sharded = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    torch.manual_seed(0)  # the workers' initialisation
    initial = GPT2ScratchForCausalLM(tiny_config(n_embd=48, n_head=4))
    assert whole.keys() == sharded.keys()
    start = dict(initial.named_parameters())
    for name, tensor in whole.items():
        moved = tensor - start[name].detach()  # what three steps changed
        assert (sharded[name] - tensor).norm() / moved.norm() < 1e-3, name


def test_schedule_warmup_peak_and_end(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizer = build_optimizer(model, adamw_config(), accelerator.device)
    lrs = []
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: changes nothing, keeps the scheduler's call-order check quiet
        optimizer.schedule_step()
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(5e-4)  # linear warmup: 5/10 of the peak
    assert lrs[10] == pytest.approx(1e-3)  # the peak
    assert lrs[55] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway down the cosine
    assert lrs[100] == pytest.approx(1e-4)  # 10% of the peak at max_steps


def test_weight_decay_only_on_matrices(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizer = build_optimizer(model, adamw_config(), accelerator.device)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    # wte (tied with lm_head), wpe, and per block c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert len(decayed["params"]) == 2 + 4 * 3
    assert len(plain["params"]) == 3 * 8 + 2  # per block: 4 LayerNorm tensors and 4 biases; then ln_f

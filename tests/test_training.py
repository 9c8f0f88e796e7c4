"""run_pretrain.py: the step, the schedule, the data order, DDP, resume and the end-to-end job."""

import itertools
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import REPO_ROOT, tiny_config, tiny_run_args
from safetensors.torch import load_file

import run_pretrain
from configuration import GPT2ScratchConfig
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training import final_model, measurement
from training.accelerator import CPU_LAUNCH_ENV, compile_plugin, ddp_settings, launch_command
from training.arguments import parse_config
from training.data import TrainBatchOrder, build_data
from training.optimizer import build_optimizer
from training.step import finish_step, train_step


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


def config_for(**overrides):
    flags = dict(max_steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1, weight_decay=0.1,
                 max_grad_norm=1.0, mixed_precision="no")
    flags.update(overrides)
    return parse_config([f"--{k}={v}" for k, v in flags.items()])


def losses_in(log_path, kind="train", key="loss"):
    records = [json.loads(line) for line in open(log_path)]
    return [(r["step"], r[key]) for r in records if r["type"] == kind]


def test_overfits_one_batch(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config(n_layer=2, n_embd=64, n_head=4, n_positions=32))
    config = config_for(learning_rate=3e-3, warmup_steps=0, weight_decay=0.0, max_steps=200)
    optimizer = build_optimizer(model, config, accelerator.device)
    rows = torch.randint(0, 101, (4, 33))
    batches = itertools.repeat((rows[:, :-1], rows[:, 1:]))
    for _ in range(200):
        result = train_step(model, optimizer, batches, 1, config, accelerator)
        optimizer.step()
        optimizer.zero_grad()
    assert result.loss.item() < 0.1


def test_accumulation_is_exact(accelerator):
    torch.manual_seed(0)
    reference = GPT2ScratchForCausalLM(tiny_config())
    accumulated = GPT2ScratchForCausalLM(tiny_config())
    accumulated.load_state_dict(reference.state_dict())
    config = config_for(warmup_steps=0)
    rows = torch.randint(0, 101, (8, 17))
    grads = []
    for model, micro in ((reference, 8), (accumulated, 2)):
        optimizer = build_optimizer(model, config, accelerator.device)
        batches = iter([(rows[i : i + micro, :-1], rows[i : i + micro, 1:]) for i in range(0, 8, micro)])
        train_step(model, optimizer, batches, 8 // micro, config, accelerator)
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    for (name, _), a, b in zip(reference.named_parameters(), *grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-5, msg=lambda m, name=name: f"gradient of {name}: {m}")
    # Adam's first update is lr * g / (|g| + eps): where |g| is near eps, float-level differences in g
    # move a weight by up to ~lr * 1e-3, hence the looser bound on the parameters.
    for (name, a), b in zip(reference.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_schedule_warmup_peak_and_end(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizer = build_optimizer(model, config_for(), accelerator.device)
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
    optimizer = build_optimizer(model, config_for(), accelerator.device)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    # wte (tied with lm_head), wpe, and per block c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert len(decayed["params"]) == 2 + 4 * 3
    assert len(plain["params"]) == 3 * 8 + 2  # per block: 4 LayerNorm tensors and 4 biases; then ln_f


def test_clipping_bounds_the_gradient_norm(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    config = config_for(max_grad_norm=0.01)
    optimizer = build_optimizer(model, config, accelerator.device)
    rows = torch.randint(0, 101, (4, 17))
    result = train_step(model, optimizer, iter([(rows[:, :-1], rows[:, 1:])]), 1, config, accelerator)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert result.grad_norm > 0.01  # the norm before clipping is reported
    assert clipped == pytest.approx(0.01, rel=1e-4)


def test_finish_step_skips_a_nonfinite_update_and_passes_preemption_on(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    config = config_for(warmup_steps=0)  # full learning rate from the first step
    optimizer = build_optimizer(model, config, accelerator.device)
    rows = torch.randint(0, 101, (4, 17))
    batch = (rows[:, :-1], rows[:, 1:])
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, optimizer, iter([batch]), 1, config, accelerator)
    result.loss = torch.tensor(float("nan"))
    assert finish_step(optimizer, result, False, accelerator) == (True, False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    result = train_step(model, optimizer, iter([batch]), 1, config, accelerator)
    assert finish_step(optimizer, result, True, accelerator) == (False, True)
    assert not torch.equal(before[0], model.transformer.wte.weight)


def test_accelerator_carries_the_ddp_and_compile_settings():
    config = config_for(ddp_bucket_cap_mb=100, compile=True, compile_mode="reduce-overhead", report_to="none")
    assert (compile_plugin(config).backend.value, compile_plugin(config).mode) == (
        "INDUCTOR", "reduce-overhead")
    assert compile_plugin(config_for(compile=False)) is None
    ddp = ddp_settings(config)
    assert (ddp.bucket_cap_mb, ddp.gradient_as_bucket_view, ddp.comm_hook.value) == (100, True, "no")
    assert ddp_settings(config_for(ddp_comm_hook="bf16")).comm_hook.value == "bf16"


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


def test_flops_per_token_of_gpt2_124m_by_hand():
    gpt2 = GPT2ScratchConfig(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, n_positions=1024)
    # 12 layers x (3*768^2 attention in + 768^2 out + 2 x 4*768^2 MLP) + 50,257 x 768 head, 6 FLOPs each,
    # plus 12 layers x 12 x 768 x 1024 for the attention scores and mixing.
    assert measurement.flops_per_token(gpt2, 1024) == 6 * (12 * 12 * 768**2 + 50257 * 768) + 12 * 12 * 768 * 1024
    assert measurement.flops_per_token(gpt2, 1024) == 854_438_400


def test_throughput_meter_leaves_out_paused_time(accelerator, monkeypatch):
    clock = iter([100.0, 101.0, 104.0, 105.0, 200.0])  # start; pause 101-104; report at 105; restart
    monkeypatch.setattr(measurement.time, "perf_counter", lambda: next(clock))
    meter = measurement.ThroughputMeter(tiny_config(), 16, tokens_per_step=512, accelerator=accelerator)
    meter.steps = 4
    with meter.paused():
        pass
    report = meter.report()
    assert report["tokens_per_second"] == 4 * 512 / 2.0  # 5 s of wall clock, 3 of them paused
    assert report["mfu"] is None and (meter.steps, meter.excluded) == (0, 0.0)


def test_batch_order_is_the_same_for_any_world_size_and_resumes():
    def step_rows(world, steps, start=0):
        orders = [iter(TrainBatchOrder(103, 2, 4 // world, world, rank, seed=7, start_step=start))
                  for rank in range(world)]
        per_step = []
        for _ in range(steps):
            rows = [r for order in orders for _ in range(4 // world) for r in next(order)]
            per_step.append(sorted(rows))
        return per_step

    single, double = step_rows(1, 30), step_rows(2, 30)
    assert single == double
    assert step_rows(1, 10, start=20) == single[20:]
    per_epoch = 103 // 8
    first_epoch = [r for rows in single[:per_epoch] for r in rows]
    assert len(set(first_epoch)) == len(first_epoch)  # no row twice within an epoch
    assert single[per_epoch] != single[0]  # the next epoch is reshuffled


def test_configuration_errors_are_one_line_and_early(tiny_data, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("optimization:\n  learning_rat: 0.1\n")
    assert run_pretrain.main([str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key optimization.learning_rat (did you mean 'learning_rate'?)" in capsys.readouterr().err
    cases = [
        (tiny_data, dict(total_batch_tokens=1000), "is not a multiple of micro_batch_size x block_size x processes"),
        (tiny_data, dict(n_positions=16), "exceeds the model's n_positions"),
        (tmp_path / "nowhere", {}, "is not prepared data"),
    ]
    for data_dir, overrides, message in cases:
        assert run_pretrain.main(tiny_run_args(data_dir, tmp_path / "run", **overrides)) == 2
        assert message in capsys.readouterr().err
    assert run_pretrain.main(["--learning_rat=0.1"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "run", push_to_hub=True)) == 2
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_end_to_end_job_and_refusal_to_mix_runs(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, sample_every=12, num_samples=2, sample_tokens=8)) == 0
    evals = losses_in(out / "log.jsonl", "eval", "val_loss")
    assert [step for step, _ in evals] == [6, 12] and evals[1][1] < evals[0][1]
    train = losses_in(out / "log.jsonl")
    assert len(train) == 12 and train[-1][1] < train[0][1]
    samples = [json.loads(line) for line in open(out / "log.jsonl") if '"samples"' in line]
    assert len(samples[0]["samples"]) == 2
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "final", trust_remote_code=True)
    assert model.config.n_layer == 2
    assert (out / "final_gpt2" / "config.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000006", "step_0000012"]
    assert run_pretrain.main(tiny_run_args(tiny_data, out)) == 2
    assert "holds another run" in capsys.readouterr().err


class FakeHub:
    """Stands in for huggingface_hub.HfApi (no hub here): records each call, 'uploads' by copying the folder."""

    calls: list = []
    root = None
    fail_on: str | None = None

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self._record("create_repo", repo_id=repo_id, private=private, exist_ok=exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message):
        self._record("upload_folder", repo_id=repo_id)
        shutil.copytree(folder_path, self.root / repo_id)
        return f"https://huggingface.co/{repo_id}"

    def _record(self, name, **kwargs):
        FakeHub.calls.append((name, kwargs))
        if FakeHub.fail_on == name:
            raise ConnectionError("hub unreachable")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    FakeHub.calls, FakeHub.root, FakeHub.fail_on = [], tmp_path / "hub", None
    monkeypatch.setattr(final_model, "HfApi", FakeHub)
    monkeypatch.setattr(final_model, "get_token", lambda: "hf_test")
    return FakeHub


def test_push_to_hub_uploads_the_saved_model_and_its_card(tiny_data, tmp_path, fake_hub):
    from huggingface_hub import ModelCard
    from transformers import GPT2LMHeadModel

    out = tmp_path / "run"
    args = tiny_run_args(tiny_data, out, max_steps=6, push_to_hub=True, hub_model_id="me/tiny-gpt2", hub_private=True,
                         hub_format="gpt2")
    assert run_pretrain.main(args) == 0
    assert [name for name, _ in fake_hub.calls] == ["create_repo", "upload_folder"]
    assert fake_hub.calls[0][1] == {"repo_id": "me/tiny-gpt2", "private": True, "exist_ok": True}
    pushed = fake_hub.root / "me/tiny-gpt2"
    assert sorted(p.name for p in pushed.iterdir()) == sorted(p.name for p in (out / "final_gpt2").iterdir())
    ours = GPT2ScratchForCausalLM.from_pretrained(out / "final").eval()
    stock = GPT2LMHeadModel.from_pretrained(pushed).eval()  # the stock export loads with no remote code
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    torch.testing.assert_close(stock(ids).logits, ours(ids, return_logits=True).logits, rtol=1e-5, atol=1e-5)
    card = ModelCard.load(pushed / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "text-generation")
    [(_, val_loss)] = losses_in(out / "log.jsonl", "eval", "val_loss")
    assert f"| {val_loss:.4f} |" in card.text
    # model-index metadata: the hub shows these as the model's evaluation results
    assert [(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results] == [
        ("loss", round(val_loss, 4), "validation")]
    assert 'from_pretrained("me/tiny-gpt2")' in card.text and "6 optimizer steps of 256 tokens" in card.text
    assert f"{stock.num_parameters():,} parameters" in card.text
    assert "![Training curves](training_curves.png)" in card.text and (pushed / "training_curves.png").stat().st_size
    remote = ModelCard.load(out / "final" / "README.md")
    assert 'from_pretrained("me/tiny-gpt2", trust_remote_code=True)' in remote.text


def test_model_card_names_a_hub_dataset_in_its_metadata(tiny_data, tmp_path):
    config = parse_config(tiny_run_args(tiny_data, tmp_path / "run", hub_model_id="me/gpt2-fineweb"))
    data = build_data(config, world_size=1)
    data.metadata["source"] = {"dataset": "HuggingFaceFW/fineweb-edu", "dataset_config": "sample-10BT"}
    model = run_pretrain.build_model(config, data)
    card = final_model.model_card(model, data, config, tmp_path / "run", stock_gpt2=False)
    assert card.data.datasets == ["HuggingFaceFW/fineweb-edu"]
    assert "on `HuggingFaceFW/fineweb-edu` (sample-10BT)" in card.text and card.text.count("# gpt2-fineweb") == 1
    assert "(no evaluation logged)" in card.text  # no log yet: the table says so instead of inventing scores


def test_hub_failures_fail_early_or_keep_the_trained_model(tiny_data, tmp_path, fake_hub, monkeypatch, capsys):
    args = dict(max_steps=2, eval_every=2, save_every=0, push_to_hub=True, hub_model_id="me/tiny-gpt2")
    fake_hub.fail_on = "create_repo"
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "refused", **args)) == 2
    assert "cannot create hub repository me/tiny-gpt2: hub unreachable" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()  # failed before anything was trained or written

    fake_hub.fail_on = "upload_folder"
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, **args)) == final_model.HUB_EXIT_CODE
    assert f"retry with: hf upload me/tiny-gpt2 {out / 'final'} ." in capsys.readouterr().err
    assert GPT2ScratchForCausalLM.from_pretrained(out / "final").config.n_layer == 2

    monkeypatch.setattr(final_model, "get_token", lambda: None)
    assert run_pretrain.main(tiny_run_args(tiny_data, tmp_path / "no_token", **args)) == 2
    assert "needs a Hugging Face token" in capsys.readouterr().err


def run_script(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "run_pretrain.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True)


@pytest.mark.slow
def test_compiled_run_trains_like_eager_and_saves_plain_weights(tiny_data, tmp_path):
    """--compile (inductor through Accelerate, the recipe's setting): same losses, and a final model whose
    tensors are named as the model's own, not `_orig_mod.<name>`."""
    losses, weights = {}, {}
    for compiled in ("false", "true"):
        out = tmp_path / f"compile_{compiled}"
        done = run_script(tiny_run_args(tiny_data, out, max_steps=4, eval_every=4, save_every=0, compile=compiled))
        assert done.returncode == 0, done.stderr[-3000:]
        losses[compiled] = [loss for _, loss in losses_in(out / "log.jsonl")]
        weights[compiled] = load_file(out / "final" / "model.safetensors")
    assert len(losses["true"]) == 4
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=1e-4)
    assert weights["true"].keys() == weights["false"].keys()
    for name, tensor in weights["false"].items():
        torch.testing.assert_close(weights["true"][name], tensor, rtol=1e-3, atol=1e-4)


def test_run_killed_with_sigkill_resumes_bit_for_bit(tiny_data, tmp_path):
    """SIGKILL after step 9, last checkpoint at step 6; resumed, steps 7-12 repeat the uninterrupted run's
    losses exactly and the final weights are bitwise equal. Steps of 640 rows (8 micro-batches of 80)
    over ~5,500 training rows put an epoch boundary (a reshuffle) after step 8, inside the resumed stretch."""
    args = dict(micro_batch_size=80, total_batch_tokens=640 * 32)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # All three runs in the same kind of process: another thread count changes float summation order.
    assert run_script(tiny_run_args(tiny_data, straight, **args)).returncode == 0
    crash = run_script(tiny_run_args(tiny_data, killed, **args), {"RUN_PRETRAIN_KILL_AFTER_STEP": "9"})
    assert crash.returncode == -9, crash.stderr[-2000:]
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step_0000006"]
    resumed = run_script(tiny_run_args(tiny_data, killed, resume_from_checkpoint="latest", **args))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight_losses = losses_in(straight / "log.jsonl")
    assert losses_in(killed / "log.jsonl")[-6:] == straight_losses[-6:]
    a = load_file(straight / "checkpoints" / "step_0000012" / "model.safetensors")
    b = load_file(killed / "checkpoints" / "step_0000012" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = len(__import__("datasets").load_from_disk(str(tiny_data))["train"])
    assert 6 * 640 < rows < 12 * 640  # the epoch boundary falls inside the resumed steps


@pytest.mark.slow
def test_readme_quickstart_commands(tmp_path):
    """The README's main job, shortened: the same two commands with the step count and paths overridden."""
    import sysconfig

    import prepare_data

    readme = (REPO_ROOT / "README.md").read_text()
    assert "--train_tokenizer_vocab 2048 --block_size 128 --output_dir outputs/quickstart/data" in readme
    assert "run_pretrain.py configs/quickstart.yaml" in readme
    stdlib = sysconfig.get_paths()["stdlib"]
    assert prepare_data.main(["--dataset", "text", "--data_files", f"{stdlib}/*.py", "--train_tokenizer_vocab",
                              "2048", "--block_size", "128", "--output_dir", str(tmp_path / "data")]) == 0
    status = run_pretrain.main([str(REPO_ROOT / "configs" / "quickstart.yaml"), "--data_dir", str(tmp_path / "data"),
                                "--output_dir", str(tmp_path / "run"), "--max_steps", "20", "--eval_every", "10",
                                "--sample_every", "20", "--save_every", "10", "--report_to", "none",
                                "--dataloader_workers", "0"])
    assert status == 0
    evals = losses_in(tmp_path / "run" / "log.jsonl", "eval", "val_loss")
    assert len(evals) == 2 and evals[1][1] < evals[0][1]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final", trust_remote_code=True).config.n_layer == 4


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_with_double_accumulation(tiny_data, tmp_path):
    """Real DDP over gloo on CPU: 2 processes x 1 micro-step against 1 process x 2 micro-steps."""
    base = tiny_run_args(tiny_data, tmp_path / "one", micro_batch_size=4, total_batch_tokens=8 * 32, max_steps=6,
                         eval_every=6, save_every=0)
    env = {**os.environ, **CPU_LAUNCH_ENV}
    one = subprocess.run(launch_command("run_pretrain.py", 1, *base), cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two_args = [a.replace(str(tmp_path / "one"), str(tmp_path / "two")) for a in base]
    two = subprocess.run(launch_command("run_pretrain.py", 2, *two_args), cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout and "accumulation 1" in two.stdout, two.stdout[-2000:]
    assert "1 processes" in one.stdout and "accumulation 2" in one.stdout
    one_losses, two_losses = losses_in(tmp_path / "one" / "log.jsonl"), losses_in(tmp_path / "two" / "log.jsonl")
    assert [s for s, _ in one_losses] == [s for s, _ in two_losses] == list(range(1, 7))
    np.testing.assert_allclose([v for _, v in two_losses], [v for _, v in one_losses], rtol=1e-5)
    one_val = losses_in(tmp_path / "one" / "log.jsonl", "eval", "val_loss")
    two_val = losses_in(tmp_path / "two" / "log.jsonl", "eval", "val_loss")
    np.testing.assert_allclose([v for _, v in two_val], [v for _, v in one_val], rtol=1e-5)

"""training/memory.py: the micro-batch search, running out of memory on one line, and the memory estimate."""

import json
import os
import subprocess

import pytest
import torch
import yaml
from support.paths import REPO_ROOT
from support.runs import log_records, losses_in, patched_run_pretrain
from support.tiny import adamw_config, tiny_config, tiny_run_args

import run_pretrain
from configuration import GPT2ScratchConfig
from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training import memory
from training.accelerator import CPU_LAUNCH_ENV, launch_command
from training.exit_codes import ExitCode
from training.optimizer import build_optimizer


def test_the_search_starts_without_accumulation_and_halves_through_sizes_that_divide_the_step():
    assert memory.micro_batch_candidates(64) == [64, 32, 16, 8, 4, 2, 1]
    assert memory.micro_batch_candidates(48) == [48, 24, 12, 6, 3, 1]
    assert memory.micro_batch_candidates(14) == [14, 7, 2, 1]  # 3 does not divide 14: the next size down does


REAL_PROBE = memory.probe_step


def fits_up_to(monkeypatch, largest: int) -> list[int]:
    """A device on which steps above `largest` rows run out of memory; returns the sizes tried."""
    tried, real_probe = [], REAL_PROBE

    def probe(model, optimizers, accelerator, micro_batch, *args):
        tried.append(micro_batch)
        if micro_batch > largest:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_probe(model, optimizers, accelerator, micro_batch, *args)

    monkeypatch.setattr(memory, "probe_step", probe)
    return tried


def test_the_largest_fitting_micro_batch_is_found_and_the_model_left_as_it_was(monkeypatch, accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizers = build_optimizer(model, adamw_config(), accelerator.device)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rng = torch.get_rng_state()
    tried = fits_up_to(monkeypatch, largest=5)
    found = memory.find_micro_batch(model, optimizers, accelerator, rows_per_process=24, block_size=16,
                                    vocab_size=101)
    assert (found, tried) == (3, [24, 12, 6, 3])  # halving through the sizes that divide 24 rows
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
    assert all(not optimizer.state for optimizer in optimizers.optimizers)  # no moments from the probe
    assert all(p.grad is None for p in model.parameters()) and torch.equal(torch.get_rng_state(), rng)


def test_nothing_fitting_is_one_clear_error(monkeypatch, accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizers = build_optimizer(model, adamw_config(), accelerator.device)
    fits_up_to(monkeypatch, largest=0)
    with pytest.raises(memory.OutOfMemory, match="not even a micro-batch of 1 x 16 fits a step on cpu"):
        memory.find_micro_batch(model, optimizers, accelerator, rows_per_process=8, block_size=16, vocab_size=101)


def test_out_of_memory_message_says_what_to_do():
    message = memory.out_of_memory_message(64, 1024, torch.device("cuda", 0))
    assert message == ("out of memory at micro-batch 64 x 1024 on cuda:0: pass --micro_batch_size auto or a smaller "
                       "one such as --micro_batch_size 32 (gradient accumulation keeps the tokens per step), or "
                       "--gradient_checkpointing true")


def test_the_memory_estimate_of_gpt2_124m_by_hand():
    with torch.device("meta"):  # shapes without memory
        model = GPT2ScratchForCausalLM(tiny_config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
                                                  n_head=12, loss_chunk_tokens=8192))
    estimate = memory.memory_estimate(model, "adamw", micro_batch=32, block_size=1024, precision="bf16")
    assert (estimate.weights, estimate.gradients, estimate.optimizer) == (4 * 124_439_808, 4 * 124_439_808,
                                                                           8 * 124_439_808)
    # 34 bytes per token, width and layer in 16-bit (32 x 1024 tokens, 768 wide, 12 layers) + one logits chunk
    # over the head padded to 50304 rows
    assert estimate.activations == 34 * 32 * 1024 * 768 * 12 + 4 * 8192 * 50304
    assert 13.8e9 < estimate.total < 14.0e9  # activations 10.3 GB + the logits chunk 1.6 GB + 2.0 GB of the rest
    muon = memory.memory_estimate(model, "muon", 32, 1024, "bf16")
    assert estimate.optimizer - muon.optimizer == 4 * 12 * 12 * 768 * 768  # one moment fewer for the matrices
    assert memory.memory_estimate(model, "adamw", 32, 1024, "no").activations > estimate.activations


def test_a_checkpoint_holds_the_weights_and_the_optimizers_real_state(tmp_path):
    """Counted against what a checkpoint's optimizer state really holds after a step: AdamW's two moments of every
    parameter, Muon's one for the blocks' matrices (and AdamW's two for the rest)."""
    model = GPT2ScratchForCausalLM(tiny_config())
    parameters = sum(p.numel() for p in model.parameters())
    for name in ("adamw", "muon"):
        optimizers = build_optimizer(model, adamw_config(optimizer=name), torch.device("cpu"))
        model(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 4, dtype=torch.long)).loss.backward()
        for optimizer in optimizers.optimizers:
            optimizer.step()
        state = sum(t.numel() * t.element_size() for optimizer in optimizers.optimizers
                    for values in optimizer.state.values() for t in values.values() if t.dim() > 0)
        assert memory.checkpoint_bytes(model, name) == 4 * parameters + state, name
        model.zero_grad(set_to_none=True)


def test_the_readmes_table_by_card_is_the_estimate_start_up_prints():
    """README's 'What to run, by card': each row's micro-batch and peak, in GiB as training/device.py prints it,
    from memory_estimate on the recipe's model (the configs' default shape)."""
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| card memory |"))
    rows = [line.strip("|").split("|") for line in lines[start + 2:] if line.startswith("|")]
    rows = rows[: next((i for i, r in enumerate(rows) if len(r) != 5), len(rows))]
    with torch.device("meta"):
        model = GPT2ScratchForCausalLM(GPT2ScratchConfig())  # 124M, the recipe's and the 24 GB config's
    assert len(rows) == 4
    for row in rows:
        micro_batch = int(row[3].split("x")[0])
        total = memory.memory_estimate(model, "adamw", micro_batch, 1024, "bf16").total
        assert row[4].strip() == f"{total / 2**30:.1f} GiB", row


def test_the_memory_estimate_follows_the_models_own_mlp_width():
    model = GPT2ScratchForCausalLM(tiny_config(n_inner=50))  # 36 wide, 3 layers, an MLP of 50, not 144
    parameters = sum(p.numel() for p in model.parameters())
    matrices = sum(p.numel() for name, p in model.named_parameters() if ".h." in name and p.dim() == 2)
    adamw = memory.memory_estimate(model, "adamw", micro_batch=2, block_size=16, precision="bf16")
    muon = memory.memory_estimate(model, "muon", micro_batch=2, block_size=16, precision="bf16")
    assert adamw.weights == 4 * parameters and adamw.optimizer - muon.optimizer == 4 * matrices
    # per token and layer: 18 x 36 outside the MLP's hidden layer, 4 x 50 inside it (34 x 36 at 144 wide)
    assert adamw.activations == (18 * 36 + 4 * 50) * 2 * 16 * 3 + 4 * 13 * 128  # 101 logits padded to 128


def test_auto_trains_exactly_as_the_micro_batch_it_found_set_by_hand(tiny_data, tmp_path, monkeypatch, capsys):
    """Steps of 8 rows: auto tries 8 (out of memory, injected), then 4; accumulation 2 keeps the step's tokens."""
    tried = fits_up_to(monkeypatch, largest=5)
    auto, by_hand = tmp_path / "auto", tmp_path / "by_hand"
    assert run_pretrain.main(tiny_run_args(tiny_data, auto, micro_batch_size="auto", max_steps=4, save_every=2)) == 0
    printed = capsys.readouterr().out
    assert tried == [8, 4] and "micro-batch auto: 4 x 32, accumulation 2 (the largest that fits)" in printed
    assert run_pretrain.main(tiny_run_args(tiny_data, by_hand, micro_batch_size=4, max_steps=4, save_every=2)) == 0
    assert losses_in(auto / "log.jsonl") == losses_in(by_hand / "log.jsonl")
    (setup,) = log_records(auto, "setup")
    assert (setup["micro_batch_size"], setup["accumulation"], setup["precision"]) == (4, 2, "no")
    # the run's configuration is what the user asked for; the setup record, what was chosen
    assert yaml.safe_load((auto / "run_config.yaml").read_text())["data"]["micro_batch_size"] == "auto"
    # a resumed run keeps the micro-batch it trained with: no search
    monkeypatch.setattr(memory, "probe_step", lambda *args: pytest.fail("searched again on resume"))
    assert run_pretrain.main(tiny_run_args(tiny_data, auto, micro_batch_size="auto", max_steps=4, save_every=2,
                                           resume_from_checkpoint="latest")) == 0
    assert f"micro-batch auto: 4 x 32, accumulation 2 (as {auto / 'checkpoints' / 'step_0000004'} trained)" in (
        capsys.readouterr().out)
    # unless that size no longer divides a step's rows on each process (another process count): search again
    manifest = auto / "checkpoints" / "step_0000004" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "micro_batch_size": 3}))
    tried = fits_up_to(monkeypatch, largest=5)
    assert run_pretrain.main(tiny_run_args(tiny_data, auto, micro_batch_size="auto", max_steps=4, save_every=2,
                                           resume_from_checkpoint="latest")) == 0
    assert tried == [8, 4]


def test_a_fixed_micro_batch_that_does_not_fit_is_one_line_and_writes_nothing(tiny_data, tmp_path, monkeypatch,
                                                                              capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")

    monkeypatch.setattr(run_pretrain, "train_step", out_of_memory)
    out = tmp_path / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=4, save_every=1)) == ExitCode.OUT_OF_MEMORY
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (  # the line after the progress bar's
        "run_pretrain.py: error: out of memory at micro-batch 4 x 32 on cpu: pass --micro_batch_size auto or a "
        "smaller one such as --micro_batch_size 2 (gradient accumulation keeps the tokens per step), or "
        "--gradient_checkpointing true")
    assert not (out / "checkpoints").exists() and not (out / "final").exists()


DIFFERENT_DEVICES = """
from training import memory

largest = {"0": 4, "1": 2}[os.environ["RANK"]]  # process 1 has less room
real_probe = memory.probe_step


def probe(model, optimizers, accelerator, micro_batch, *args):
    if micro_batch > largest:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
    real_probe(model, optimizers, accelerator, micro_batch, *args)


memory.probe_step = probe
"""


@pytest.mark.slow
def test_two_processes_that_fit_different_micro_batches_agree_on_the_smaller(tiny_data, tmp_path):
    script = patched_run_pretrain(tmp_path, DIFFERENT_DEVICES)
    out = tmp_path / "run"
    args = tiny_run_args(tiny_data, out, micro_batch_size="auto", max_steps=2, eval_every=2, save_every=0)
    done = subprocess.run(launch_command(str(script), 2, *args), cwd=REPO_ROOT, env={**os.environ, **CPU_LAUNCH_ENV},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "micro-batch auto: 2 x 32, accumulation 2 (the largest that fits)" in done.stdout  # 4 rows a process
    (setup,) = log_records(out, "setup")
    assert (setup["micro_batch_size"], setup["accumulation"], setup["processes"]) == (2, 2, 2)

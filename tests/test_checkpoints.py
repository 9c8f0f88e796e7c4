"""training/checkpoints.py: checkpoints whole or absent, checked against their manifest, and the checks before a run."""

import hashlib
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from support.tiny import tiny_config

from modeling_gpt2_scratch import GPT2ScratchForCausalLM
from training.arguments import ConfigError, parse_config
from training.checkpoints import (
    MANIFEST_FILE,
    check_disk_space,
    check_run_directory,
    checkpoint_dir,
    checkpoint_dirs,
    checkpoint_problem,
    save_checkpoint,
)


@pytest.fixture
def prepared(accelerator):
    model = GPT2ScratchForCausalLM(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return accelerator.prepare(model, optimizer)


def test_a_checkpoint_is_its_files_and_a_manifest_of_their_checksums(accelerator, prepared, tmp_path):
    save_checkpoint(accelerator, tmp_path, 3, keep_last=3, extra={"data_identity": {"rows": 7}})
    saved = checkpoint_dir(tmp_path, 3)
    assert saved.name == "step_0000003" and not saved.with_name("step_0000003.tmp").exists()
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert (manifest["step"], manifest["data_identity"]) == (3, {"rows": 7})
    files = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*")
                   if p.is_file() and p.name != MANIFEST_FILE)
    assert sorted(manifest["files"]) == files and "model.safetensors" in files
    for name, entry in manifest["files"].items():
        data = (saved / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert checkpoint_problem(saved) is None


def test_damage_is_named_and_only_finished_checkpoints_count(accelerator, prepared, tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(accelerator, tmp_path, step, keep_last=2, extra={})
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_0000004", "step_0000006"]  # the oldest pruned
    (tmp_path / "checkpoints" / "step_0000008.tmp").mkdir()  # a save that never finished
    shutil.copytree(checkpoint_dir(tmp_path, 6), checkpoint_dir(tmp_path, 9))
    (checkpoint_dir(tmp_path, 9) / MANIFEST_FILE).unlink()  # no manifest: not a checkpoint
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_0000004", "step_0000006"]
    weights = checkpoint_dir(tmp_path, 6) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert checkpoint_problem(checkpoint_dir(tmp_path, 6)) == f"{weights} is corrupted (checksum mismatch)"
    weights.write_bytes(bytes(data[:-10]))
    assert "is truncated or altered" in checkpoint_problem(checkpoint_dir(tmp_path, 6))
    weights.unlink()
    assert checkpoint_problem(checkpoint_dir(tmp_path, 6)) == f"{weights} is missing"


def test_a_run_needs_room_for_one_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=10 * 2**30))
    check_disk_space(tmp_path / "new" / "run", checkpoint_bytes=12 * 124_000_000)  # 1.6 GB of 10 GiB
    with pytest.raises(ConfigError, match=r"has 10.00 GiB free; one checkpoint needs about 12.29 GiB"):
        check_disk_space(tmp_path, checkpoint_bytes=12 * 1_000_000_000)  # 10% spare


def test_a_directory_of_another_run_is_refused_unless_resuming_or_overwriting(tmp_path):
    (tmp_path / "run_config.yaml").write_text("{}")
    with pytest.raises(ConfigError, match="holds another run; resume it"):
        check_run_directory(parse_config([]), tmp_path, resuming=False)
    check_run_directory(parse_config([]), tmp_path, resuming=True)
    check_run_directory(parse_config(["--resume_from_checkpoint=latest"]), tmp_path, resuming=False)
    check_run_directory(parse_config(["--overwrite_output_dir=true"]), tmp_path, resuming=False)
    check_run_directory(parse_config([]), tmp_path / "fresh", resuming=False)


def test_the_tied_head_is_saved_once_without_a_warning_and_tied_again_on_load(tmp_path, caplog):
    from accelerate import Accelerator
    from safetensors import safe_open

    from training.checkpoints import save_tied_weights_once

    accelerator = Accelerator(cpu=True)
    accelerator.register_save_state_pre_hook(save_tied_weights_once)
    saved = accelerator.prepare(GPT2ScratchForCausalLM(tiny_config()))
    with caplog.at_level("WARNING"):
        accelerator.save_state(str(tmp_path / "state"))
    with safe_open(tmp_path / "state" / "model.safetensors", "pt") as f:
        assert "transformer.wte.weight" in f.keys() and "lm_head.weight" not in f.keys()
    assert "Removed shared tensor" not in caplog.text
    torch.manual_seed(1)
    loaded = GPT2ScratchForCausalLM(tiny_config())  # other random weights
    accelerator._models = [loaded]
    accelerator.load_state(str(tmp_path / "state"))
    assert torch.equal(loaded.transformer.wte.weight, saved.transformer.wte.weight)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still one tensor: the tie survived

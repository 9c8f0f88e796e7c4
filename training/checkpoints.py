"""Checkpoints that are whole or absent (checksummed manifest written last), resuming, and pre-run checks."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import extract_model_from_parallel

from formats.packed_data import identity_difference
from training.arguments import ConfigError, RunConfig

MANIFEST_FILE = "manifest.json"  # what a checkpoint holds: its step, data, micro-batch and files' checksums


CHECKPOINTS_DIR = "checkpoints"


class CheckpointError(Exception):
    """A checkpoint could not be written; the run stops with the earlier checkpoints intact."""


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Checkpoints whose manifest is in place, oldest first (the manifest is written last)."""
    root = output_dir / CHECKPOINTS_DIR
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step_") and not p.name.endswith(".tmp")]
    return sorted((p for p in found if (p / MANIFEST_FILE).exists()), key=lambda p: int(p.name.split("_")[1]))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint (naming the file), or None when every file matches its manifest."""
    try:
        manifest = read_manifest(checkpoint)
    except (OSError, json.JSONDecodeError) as error:
        return f"{checkpoint / MANIFEST_FILE} is unreadable ({error})"
    for name, expected in manifest.get("files", {}).items():
        path = checkpoint / name
        if not path.exists():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path} is truncated or altered ({path.stat().st_size} bytes, expected {expected['bytes']})"
        if file_digest(path) != expected["sha256"]:
            return f"{path} is corrupted (checksum mismatch)"
    return None


def save_tied_weights_once(models, weights: list[dict], output_dir):
    """Accelerate's save-state hook: a tied weight (the head, tied to the token embedding) is left out of the
    saved state, as `save_pretrained` leaves out `_tied_weights_keys`, instead of Accelerate dropping it with a
    warning at every checkpoint. Loading re-ties it: safetensors' `load_model` fills shared tensors."""
    for model, state in zip(models, weights, strict=True):
        tied = getattr(extract_model_from_parallel(model, keep_torch_compile=False), "_tied_weights_keys", None) or {}
        for key in [k for k in state if any(k == t or k.endswith("." + t) for t in tied)]:
            del state[key]


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"step_{step:07d}"


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep_last: int, extra: dict):
    """accelerator.save_state into step_N.tmp, a manifest of checksums, then a rename: a checkpoint is
    either whole or absent, and a failed write leaves the previous ones as they were."""
    final = checkpoint_dir(output_dir, step)
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    error = None
    try:
        accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            files = {p.relative_to(staging).as_posix(): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
                     for p in sorted(staging.rglob("*")) if p.is_file()}
            manifest = staging / (MANIFEST_FILE + ".partial")
            manifest.write_text(json.dumps({"step": step, **extra, "files": files}, indent=2))
            manifest.rename(staging / MANIFEST_FILE)
    except OSError as caught:  # disk full, quota, permissions: this save is lost, nothing else
        error = caught
    failed = accelerator.reduce(torch.tensor(float(error is not None), device=accelerator.device), "sum").item()
    if failed:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        reason = error or "another process failed to write its part"
        raise CheckpointError(f"could not write checkpoint {final}: {reason}; earlier checkpoints are intact")
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for old in checkpoint_dirs(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)  # the newest, just written and verified, is always kept
    accelerator.wait_for_everyone()


def resolve_resume(config: RunConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: `latest` is the newest intact one (damaged ones are skipped, with a
    warning); an explicit path must be intact."""
    requested = config.checkpointing.resume_from_checkpoint
    if not requested:
        return None
    if requested == "latest":
        found = checkpoint_dirs(output_dir)
        for checkpoint in reversed(found):
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                return checkpoint
            print(f"run_pretrain.py: warning: skipping damaged checkpoint: {problem}", file=sys.stderr)
        if found:
            raise ConfigError(f"no intact checkpoint in {output_dir / CHECKPOINTS_DIR}")
        return None  # nothing saved yet: a first launch of a requeueing job starts from scratch
    path = Path(requested)
    if not (path / MANIFEST_FILE).exists():
        raise ConfigError(f"{path} is not a complete checkpoint ({MANIFEST_FILE} missing)")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"cannot resume: {problem}")
    return path


def read_manifest(checkpoint: Path) -> dict:
    """What a checkpoint records beside its files: the step, its data's identity, the micro-batch, checksums."""
    return json.loads((checkpoint / MANIFEST_FILE).read_text())


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, data_identity: dict, data_dir: str) -> int:
    """Restore model, optimizer, schedule and RNG states; returns the optimizer step to continue from.
    The checkpoint's data must be this data by content (`formats.packed_data.data_identity`)."""
    manifest = read_manifest(checkpoint)
    recorded = manifest.get("data_identity")
    if recorded is None:
        raise ConfigError(f"{checkpoint} was written by an earlier version of this kit, which did not record what "
                          "its data is: it cannot be resumed here")
    difference = identity_difference(recorded, data_identity)
    if difference:
        raise ConfigError(f"{checkpoint} was trained on other data than {data_dir} ({difference})")
    accelerator.load_state(str(checkpoint))
    accelerator.print(f"resumed from {checkpoint} at step {manifest['step']}")
    return manifest["step"]


def check_disk_space(output_dir: Path, checkpoint_bytes: int):
    """Refuse to start without room for one checkpoint (`training.memory.checkpoint_bytes`), and 10% to spare."""
    needed = checkpoint_bytes * 1.1
    existing = next(p for p in [output_dir, *output_dir.resolve().parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ConfigError(f"{existing} has {free / 2**30:.2f} GiB free; one checkpoint needs about "
                          f"{needed / 2**30:.2f} GiB")


def check_run_directory(config: RunConfig, output_dir: Path, resuming: bool):
    """Refuse to mix two runs in one directory, unless resuming or told to overwrite."""
    previous = output_dir / "run_config.yaml"
    # `latest` is how a requeued job relaunches: the directory holds this very run, maybe without a checkpoint yet.
    if not previous.exists() or resuming or config.checkpointing.resume_from_checkpoint == "latest":
        return
    if not config.output.overwrite_output_dir:
        raise ConfigError(f"{output_dir} holds another run; resume it (--resume_from_checkpoint latest) or pass "
                          "--overwrite_output_dir")

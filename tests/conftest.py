import os
from pathlib import Path

import pytest
import torch

from configuration import GPT2ScratchConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or wherever GPT2_SCRATCH_DATA points."""
    return Path(os.environ.get("GPT2_SCRATCH_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "gpt2.tiktoken").exists():
        pytest.skip(f"shared data not found at {path} (set GPT2_SCRATCH_DATA)")
    return path


def tiny_config(**overrides) -> GPT2ScratchConfig:
    """Non-default sizes on purpose: odd vocabulary, heads that are not a power of two."""
    fields = dict(vocab_size=101, n_positions=48, n_embd=36, n_layer=3, n_head=3, bos_token_id=100,
                  eos_token_id=100, pad_vocab_size_multiple=64, loss_chunk_tokens=13)
    fields.update(overrides)
    return GPT2ScratchConfig(**fields)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TINY_BLOCK = 32


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Python's own `email` package sources, a 384-token BPE trained on them, packed in blocks of 32."""
    import sysconfig

    from prepare_data import PrepareArguments, prepare

    out = tmp_path_factory.mktemp("tiny") / "data"
    stdlib = sysconfig.get_paths()["stdlib"]
    prepare(PrepareArguments(output_dir=str(out), dataset="text", data_files=[f"{stdlib}/email/*.py"],
                             train_tokenizer_vocab=384, block_size=TINY_BLOCK, num_proc=1, val_tokens=4096))
    return out


def tiny_run_args(data_dir, output_dir, **overrides) -> list[str]:
    """Command-line flags for run_pretrain on the tiny data: a 2-layer model, 8 rows x 32 tokens a step."""
    flags = dict(data_dir=data_dir, output_dir=output_dir, n_layer=2, n_head=2, n_embd=32, n_positions=TINY_BLOCK,
                 micro_batch_size=4, total_batch_tokens=8 * TINY_BLOCK, dataloader_workers=0, max_steps=12,
                 warmup_steps=2, learning_rate=3e-3, mixed_precision="no", tf32=False, log_every=1, eval_every=6,
                 eval_tokens=1024, sample_every=0, save_every=6, report_to="none")
    flags.update(overrides)
    return [f"--{key}={value}" for key, value in flags.items()]


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    """A run_pretrain.py job on the tiny data: `final/` (this model, remote code) and `final_gpt2/` (stock)."""
    import run_pretrain

    out = tmp_path_factory.mktemp("trained") / "run"
    assert run_pretrain.main(tiny_run_args(tiny_data, out, max_steps=6, save_every=0)) == 0
    return out

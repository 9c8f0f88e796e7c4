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

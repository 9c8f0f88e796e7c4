"""Where the checkout and the shared data are."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or wherever GPT2_SCRATCH_DATA points."""
    return Path(os.environ.get("GPT2_SCRATCH_DATA", REPO_ROOT.parent / "shared" / "data"))

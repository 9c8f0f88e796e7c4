"""Where the checkout and the shared data are."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def readme_lines(starting: str) -> list[str]:
    """README.md's command lines that start with these words (a line ending in `\\` joined with the next)."""
    lines = (REPO_ROOT / "README.md").read_text().replace("\\\n", " ").splitlines()
    found = [line.strip() for line in lines if line.startswith(starting)]
    assert found, f"README.md has no command starting {starting!r}"
    return found


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or wherever GPT2_SCRATCH_DATA points."""
    return Path(os.environ.get("GPT2_SCRATCH_DATA", REPO_ROOT.parent / "shared" / "data"))

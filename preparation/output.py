"""The output directory: written whole into a staging directory, then renamed into place, or not at all."""

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from formats.packed_data import METADATA_FILE
from preparation import PrepareError


def holds_this_preparation(output: Path, arguments: dict, overwrite: bool) -> bool:
    """True when `output` already holds exactly the preparation `arguments` describe; raises when it holds
    something else (unless `overwrite`)."""
    if not output.exists() or not any(output.iterdir()):
        return False
    metadata_path = output / METADATA_FILE
    if metadata_path.exists() and not overwrite:
        metadata = json.loads(metadata_path.read_text())
        if metadata.get("arguments") == arguments and "rows_sha256" in metadata:  # not an earlier version's output
            return True
    if not overwrite:
        raise PrepareError(f"{output} already holds other data; pass --overwrite to replace it")
    return False


@contextmanager
def staged(output: Path):
    """A fresh staging directory beside `output`, renamed into its place when the block ends; an error or
    Ctrl-C inside leaves nothing half-written behind, and `output` as it was."""
    staging = output.with_name(output.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, output)


def replace_directory(staging: Path, output: Path):
    """Rename `staging` to `output`; an existing `output` is moved aside first and removed only afterwards."""
    retired = output.with_name(output.name + ".old")
    if output.exists():
        shutil.rmtree(retired, ignore_errors=True)
        output.rename(retired)
    staging.rename(output)
    shutil.rmtree(retired, ignore_errors=True)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

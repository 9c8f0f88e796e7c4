"""training/exit_codes.py: one table of statuses, and the README's table is that table."""

from support.paths import REPO_ROOT

import run_pretrain
from training.arguments import ConfigError
from training.checkpoints import CheckpointError
from training.exit_codes import MEANING, ExitCode
from training.faults import RunStopped
from training.memory import OutOfMemory


def readme_statuses() -> dict[int, tuple[str, str]]:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    start = lines.index("| exit status | meaning | what a job script does |")
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        status, meaning, action = (cell.strip() for cell in line.strip("|").split("|"))
        rows[int(status)] = (meaning, action)
    return rows


def test_the_readme_lists_every_status_as_the_code_does():
    assert readme_statuses() == {int(code): text for code, text in MEANING.items()}
    assert set(MEANING) == set(ExitCode)


def test_each_one_line_error_maps_to_its_own_status(tiny_data, tmp_path, monkeypatch, capsys):
    statuses = {ConfigError: ExitCode.BAD_SETTING, CheckpointError: ExitCode.CHECKPOINT_FAILED,
                OutOfMemory: ExitCode.OUT_OF_MEMORY, RunStopped: ExitCode.STALLED}
    for error, status in statuses.items():
        def fails(config, error=error):
            raise error("what went wrong")

        monkeypatch.setattr(run_pretrain, "train_and_save", fails)
        assert run_pretrain.main([]) == status
        assert capsys.readouterr().err == "run_pretrain.py: error: what went wrong\n"

"""README.md's commands that fit on CPU, as written, from a fresh folder, against the stand-in of the hub: they need
nothing but hub ids and the files the kit itself writes."""

import os
import shlex
import sys

from support.hub import HubStandIn
from support.paths import REPO_ROOT, readme_lines
from support.runs import run_together

from eval.hellaswag import load_examples


def as_run_here(line: str) -> list[str]:
    """The command as argv: the README's python is this interpreter, its scripts and configs the checkout's."""
    argv = shlex.split(line.split("  #")[0])
    argv[0] = sys.executable
    return [str(REPO_ROOT / a) if (REPO_ROOT / a).is_file() and not a.startswith("-") else a for a in argv]


def test_the_real_text_example_and_the_offline_hellaswag_export_run_as_written(fineweb_hub, tmp_path):
    (prepare,) = readme_lines(".venv/bin/python prepare_data.py --data_files sample/10BT")
    (train,) = readme_lines(".venv/bin/python run_pretrain.py configs/quickstart.yaml --data_dir outputs/fineweb")
    export = readme_lines('python -c "import datasets;')[0]
    with HubStandIn(fineweb_hub.root) as hub:
        env = {**os.environ, **hub.environment(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
        folder = tmp_path / "fresh"
        folder.mkdir()
        prepared, exported = run_together([as_run_here(prepare), as_run_here(export)], env=env, cwd=folder)
        assert prepared.returncode == 0, prepared.stderr[-3000:]
        assert exported.returncode == 0, exported.stderr[-3000:]
        # the recipe's 300 steps shortened to 2: everything else as written
        short = [*as_run_here(train), "--max_steps", "2", "--eval_every", "2", "--sample_every", "-1",
                 "--save_every", "-1"]
        (trained,) = run_together([short], env=env, cwd=folder)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (folder / "outputs" / "fineweb_slice" / "run" / "final" / "model.safetensors").exists()
    served = (fineweb_hub.root / "datasets" / "Rowan" / "hellaswag").exists()
    examples = load_examples(str(folder / "data" / "hellaswag_local.jsonl"))
    assert served and len(examples) == 400 and all(len(e.endings) == 4 for e in examples)

"""The shipped recipes and launcher configs load, and the 124M recipe is the reproduction's."""

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from support.paths import REPO_ROOT

from run_pretrain import parse_config

RECIPES = sorted((REPO_ROOT / "configs").glob("*.yaml"))
LAUNCHERS = sorted((REPO_ROOT / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe):
    config = parse_config([str(recipe)])
    assert config.model.n_embd % config.model.n_head == 0


def test_124m_recipe_is_the_reproduction():
    c = parse_config([str(REPO_ROOT / "configs" / "gpt2_124m_fineweb_edu.yaml")])
    assert (c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.n_positions) == (12, 12, 768, 1024)
    assert c.data.total_batch_tokens == 2**19 and c.data.micro_batch_size == 64
    o = c.optimization
    assert (o.adam_beta1, o.adam_beta2, o.adam_epsilon, o.weight_decay) == (0.9, 0.95, 1e-8, 0.1)
    assert (o.learning_rate, o.min_lr_ratio, o.warmup_steps, o.max_steps) == (6e-4, 0.1, 715, 19073)
    a = c.accelerator
    assert (o.max_grad_norm, a.mixed_precision, a.tf32, c.data.seed, a.compile) == (1.0, "auto", True, 1337, True)
    assert c.output.final_format == "gpt2"


def test_command_line_overrides_the_yaml():
    c = parse_config([str(REPO_ROOT / "configs" / "quickstart.yaml"), "--max_steps", "7", "--n_layer=2"])
    assert c.optimization.max_steps == 7 and c.model.n_layer == 2 and c.model.n_embd == 128


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda p: p.name)
def test_accelerate_config_loads(launcher):
    config = ClusterConfig.from_yaml_file(str(launcher))
    assert config.num_processes >= 1


COMMANDS = ["prepare_data", "run_pretrain", "eval.hellaswag", "eval.lm_eval_local", "eval.plot", "eval.val_loss",
            "throughput", "ddp_scaling", "prepare_data_speed"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_prints_its_help(module, capsys, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_readme_leads_with_the_two_make_commands_that_ci_runs():
    """README's first command block is `make quickstart` and `make test`; CI runs `make test` on a fresh .venv;
    the Makefile's quickstart is the README's explicit main job."""
    import re
    import subprocess

    readme = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make quickstart",
                                                                                          "make test"]
    assert (REPO_ROOT / ".ci" / "run").read_text().strip().splitlines()[-2:] == ["rm -rf .venv", "make test"]
    dry_run = subprocess.run(["make", "-n", "-B", "quickstart", "test"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout
    assert "--train_tokenizer_vocab 2048 --block_size 128 --output_dir outputs/quickstart/data" in dry_run
    assert "run_pretrain.py configs/quickstart.yaml" in dry_run and "-c constraints.txt" in dry_run
    assert ".venv/bin/python -m pytest -q" in dry_run and ".venv/bin/python -m pytest -q" in readme

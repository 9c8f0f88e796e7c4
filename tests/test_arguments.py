"""training/arguments.py: YAML sections and command-line flags into typed dataclasses, mistakes named early."""

import dataclasses

import pytest
import yaml
from support.paths import REPO_ROOT

from training.arguments import CONFIG_SECTIONS, ConfigError, EvaluationArguments, parse_config


def test_a_saved_configuration_reads_back_as_the_same_run(tmp_path):
    config = parse_config(["--n_layer=3", "--learning_rate=2e-4", "--optimizer=muon", "--output_dir=out/x"])
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config.to_dict()))
    assert parse_config([str(tmp_path / "run.yaml")]) == config
    assert set(config.to_dict()) == set(CONFIG_SECTIONS)
    assert all(set(config.to_dict()[name]) == {f.name for f in dataclasses.fields(section)}
               for name, section in CONFIG_SECTIONS.items())


def test_flags_override_the_yaml_and_types_are_the_fields_own(tmp_path):
    (tmp_path / "run.yaml").write_text("model:\n  n_layer: 4\noptimization:\n  learning_rate: 1.0e-3\n")
    config = parse_config([str(tmp_path / "run.yaml"), "--n_layer", "6", "--compile", "true"])
    assert (config.model.n_layer, config.optimization.learning_rate, config.accelerator.compile) == (6, 1e-3, True)


@pytest.mark.parametrize("text,message", [
    ("optimisation:\n  learning_rate: 0.1\n", "unknown section 'optimisation' (did you mean 'optimization'?)"),
    ("model:\n  n_layers: 4\n", "unknown key model.n_layers (did you mean 'n_layer'?)"),
    ("model: [unclosed\n", "cannot read config"),
])  # fmt: skip
def test_yaml_mistakes_are_named_with_a_suggestion(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        parse_config([str(tmp_path / "bad.yaml")])
    assert message in str(caught.value)


def test_unknown_and_abbreviated_flags_are_refused():
    with pytest.raises(ConfigError, match=r"unknown option --learning_rat=0.1 \(did you mean 'learning_rate'\?\)"):
        parse_config(["--learning_rat=0.1"])  # argparse would otherwise take a prefix for the whole name
    with pytest.raises(ConfigError, match="unknown option --no_such_flag"):
        parse_config(["--no_such_flag", "1"])


BAD_VALUES = [
    (dict(n_head=5, n_embd=128), "--n_embd 128 is not divisible by --n_head 5"),
    (dict(n_layer=0), "model sizes must be positive"),
    (dict(learning_rate=-1), "--learning_rate -1.0 must be positive"),
    (dict(learning_rate=0), "--learning_rate 0.0 must be positive"),
    (dict(max_steps=0), "--max_steps 0 must be positive"),
    (dict(micro_batch_size=0), "--micro_batch_size 0 must be positive"),
    (dict(total_batch_tokens=-8), "--total_batch_tokens -8 must be positive"),
    (dict(dropout=1.0), "--dropout 1.0 must be in [0, 1)"),
    (dict(min_lr_ratio=1.5), "--min_lr_ratio 1.5 must be in [0, 1]"),
    (dict(weight_decay=-0.1), "--weight_decay -0.1 must be 0 or more"),
    (dict(adam_beta2=1.0), "must be in [0, 1)"),
    (dict(warmup_steps=-1), "--warmup_steps -1 must be 0 or more"),
    (dict(eval_every=-2), "--eval_every -2 must be a step count, 0 (only after the last step) or -1 (never)"),
    (dict(save_every=-5), "--save_every -5 must be a step count"),
    (dict(eval_tokens=0), "--eval_tokens 0 must be positive"),
    (dict(keep_last=-1), "--keep_last -1 must be 0 (all) or more"),
]


@pytest.mark.parametrize("flags,message", BAD_VALUES, ids=[message.split()[0] for _, message in BAD_VALUES])
def test_a_bad_value_is_one_line(flags, message):
    with pytest.raises(ConfigError) as caught:
        parse_config([f"--{key}={value}" for key, value in flags.items()])
    assert message in str(caught.value) and "\n" not in str(caught.value)


INERT = [
    (dict(muon_qkv="split"), "--muon_qkv acts only with --optimizer muon"),
    (dict(muon_learning_rate=1e-2), "--muon_learning_rate acts only with --optimizer muon"),
    (dict(decay_fraction=0.3), "--decay_fraction acts only with --lr_schedule wsd"),
    (dict(hub_model_id="me/x"), "--hub_model_id acts only with --push_to_hub true"),
    (dict(hellaswag_file="cloze.jsonl"), "--hellaswag_file acts only with --hellaswag_every 0 or more"),
    (dict(compile_mode="reduce-overhead"), "--compile_mode acts only with --compile true"),
    (dict(sample_every=-1, num_samples=2), "--num_samples acts only with --sample_every 0 or more"),
    (dict(save_every=-1, keep_last=5), "--keep_last acts only with --save_every 0 or more"),
]


@pytest.mark.parametrize("flags,message", INERT, ids=[message.split()[0] for _, message in INERT])
def test_an_option_the_settings_would_ignore_is_refused(flags, message):
    with pytest.raises(ConfigError, match=message):
        parse_config([f"--{key}={value}" for key, value in flags.items()])


def test_the_same_options_act_once_their_setting_is_chosen():
    config = parse_config(["--optimizer=muon", "--muon_qkv=split", "--lr_schedule=wsd", "--decay_fraction=0.3",
                           "--push_to_hub=true", "--hub_model_id=me/x", "--hellaswag_every=0",
                           "--hellaswag_file=cloze.jsonl", "--compile=true", "--compile_mode=reduce-overhead"])
    assert (config.optimization.muon_qkv, config.hub.hub_model_id, config.evaluation.hellaswag_file) == (
        "split", "me/x", "cloze.jsonl")


def test_a_warmup_longer_than_the_run_is_a_warning_not_an_error():
    with pytest.warns(UserWarning, match="--warmup_steps 715 is longer than the run"):
        assert parse_config(["--max_steps=20"]).optimization.max_steps == 20


@pytest.mark.parametrize("text,message", [
    ("optimization:\n  mixed_precision: bf16\n", "mixed_precision belongs under accelerator, not optimization"),
    ("model:\n  compile: true\n", "compile belongs under accelerator, not model"),
    ("evalution:\n  eval_every: 5\n", "unknown section 'evalution' (did you mean 'evaluation'?)"),
])  # fmt: skip
def test_a_misplaced_or_mistyped_name_is_answered_with_where_it_belongs(tmp_path, text, message):
    (tmp_path / "recipe.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_config([str(tmp_path / "recipe.yaml")])


def test_a_recipe_option_that_an_override_makes_inert_is_left_out_with_a_note(capsys):
    recipe = str(REPO_ROOT / "configs" / "quickstart.yaml")  # sets eval_tokens, sample_prompt, num_samples, ...
    defaults = EvaluationArguments()
    config = parse_config([recipe, "--eval_every", "-1", "--sample_every=-1"])
    e = config.evaluation
    assert (e.eval_every, e.sample_every) == (-1, -1)
    assert (e.eval_tokens, e.sample_prompt, e.num_samples, e.sample_tokens) == (
        defaults.eval_tokens, defaults.sample_prompt, defaults.num_samples, defaults.sample_tokens)
    notes = capsys.readouterr().err.strip().splitlines()
    note = "run_pretrain.py: note: the recipe's {} acts only with --{} 0 or more; left out"
    assert note.format("eval_tokens", "eval_every") in notes and note.format("sample_prompt", "sample_every") in notes
    assert len(notes) == 4  # eval_tokens, sample_prompt, num_samples, sample_tokens: one line each


def test_an_inert_option_written_on_the_command_line_is_still_refused_over_a_recipe():
    recipe = str(REPO_ROOT / "configs" / "quickstart.yaml")
    with pytest.raises(ConfigError, match="--eval_tokens acts only with --eval_every 0 or more"):
        parse_config([recipe, "--eval_every=-1", "--eval_tokens=5000"])

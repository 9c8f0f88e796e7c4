"""training/arguments.py: YAML sections and command-line flags into typed dataclasses, mistakes named early."""

import dataclasses

import pytest
import yaml

from training.arguments import CONFIG_SECTIONS, ConfigError, parse_config


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
    assert (config.model.n_layer, config.optimization.learning_rate, config.model.compile) == (6, 1e-3, True)


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

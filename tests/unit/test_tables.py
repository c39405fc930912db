"""The tables the code is built from: config rules, review reasons. Each row must say what
the user sees (its option, its meaning), and every row must be reachable."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from mtl.cli import app
from mtl.errors import UsageError
from mtl.pipeline import config


def options_of(command: str) -> dict[str, list[str]]:
    """Parameter name -> its option names, as ``mtl COMMAND --help`` shows them."""
    group = typer.main.get_command(app)
    return {p.name: p.opts for p in group.commands[command].params}  # type: ignore[attr-defined]


# One value each rule refuses. A new rule needs a row here (the test below says so).
BAD = {
    "epochs": 0,
    "batch_size": 0,
    "learning_rate": 0.0,
    "fine_tune_lr": -1e-5,
    "fine_tune_epochs": -1,
    "fine_tune_layers": 0,
    "patience": -1,
    "seed": 2**32,
    "dropout": 1.0,
    "val_split": 1.0,
    "optimizer": "adagrad",
    "precision": "float16",
    "class_weight": "balanced",
    "fit": "crop",
    "base_engine": "onnx",
    "cache_memory_mb": -1,
}


def test_every_rule_checks_a_setting_and_has_a_bad_example():
    keys = [rule.key for rule in config.RULES]
    assert len(keys) == len(set(keys)), "one rule per setting"
    assert set(keys) <= set(config.KEYS)
    assert set(keys) == set(BAD)


@pytest.mark.parametrize("rule", config.RULES, ids=lambda r: r.key)
def test_every_rule_message_names_its_option(rule):
    """The message starts with the option ``mtl train`` has for the setting (the first
    long name, as --help lists it), or with the config key where there is no option."""
    opts = options_of("train").get(rule.key)
    name = opts[0] if opts else rule.key
    assert rule.message.startswith(f"{name} must "), rule.message


@pytest.mark.parametrize("rule", config.RULES, ids=lambda r: r.key)
def test_every_rule_refuses_its_bad_value_with_its_message(rule):
    good = config.TrainConfig()
    assert config.validate(good) is good
    bad = dataclasses.replace(good, **{rule.key: BAD[rule.key]})
    with pytest.raises(UsageError) as caught:
        config.validate(bad)
    assert str(caught.value) == f"{rule.message}. Received {rule.key}={BAD[rule.key]!r}"


def test_a_bad_setting_in_a_config_file_names_the_option(tmp_path):
    preset = tmp_path / "preset.toml"
    preset.write_text("epochs = 0\n")
    with pytest.raises(UsageError, match=r"^--epochs must be at least 1\. Received epochs=0$"):
        config.resolve(preset)

"""The tables the code is built from: config rules, review reasons. Each row must say what
the user sees (its option, its meaning), and every row must be reachable."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from mtl.cli import app
from mtl.errors import UsageError
from mtl.pipeline import config
from mtl.review import flags


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
    "base_precision": "int4",
    "base_engine": "onnx",
    "cache_memory_mb": -1,
    "head": [33000],
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
    said = f"{rule.message}. Received {rule.key}={BAD[rule.key]!r}"
    assert str(caught.value) in (said, f"{said}{config._hint(rule.key, BAD[rule.key])}")


def test_a_bad_setting_in_a_config_file_names_the_option(tmp_path):
    preset = tmp_path / "preset.toml"
    preset.write_text("epochs = 0\n")
    with pytest.raises(UsageError, match=r"^--epochs must be 1 to 100000\. Received epochs=0$"):
        config.resolve(preset)


def test_every_setting_row_is_an_option_of_train_with_its_flags_and_help():
    """mtl train's setting options are made from config.SETTINGS: one row, one option."""
    group = typer.main.get_command(app)
    params = {p.name: p for p in group.commands["train"].params}  # type: ignore[attr-defined]
    assert set(config.SETTINGS) <= set(config.KEYS)
    for key, row in config.SETTINGS.items():
        opts = [*params[key].opts, *getattr(params[key], "secondary_opts", [])]
        assert set(row.flags) <= set(opts), (key, opts)
        assert params[key].help.startswith(row.help.split(" ")[0])
        assert params[key].default is None  # not given: the config file or the default decides
    assert set(config.CHOICES) <= set(config.SETTINGS)


# Review reasons ---------------------------------------------------------------------------


def test_every_reason_has_a_threshold_with_a_range_and_a_way_to_set_it():
    fields = {f.name for f in dataclasses.fields(flags.Thresholds)}
    assert set(flags.LIMITS) == fields, "one range per threshold"
    assert tuple(r.name for r in flags.REASON_TABLE) == flags.REASONS
    assert len(set(flags.REASONS)) == len(flags.REASONS)
    for reason in flags.REASON_TABLE:
        assert reason.threshold in fields, reason.name
        assert reason.meaning and reason.name.isidentifier()


def test_every_threshold_option_is_a_review_option_with_the_api_default():
    """A threshold with a command-line option (a --name) is an option of mtl review, with
    the help of its table row and the default of ``Thresholds``; the rest are the API's."""
    group = typer.main.get_command(app)
    params = {p.opts[0]: p for p in group.commands["review"].params}  # type: ignore[attr-defined]
    default = flags.Thresholds()
    cli = {name: limit for name, limit in flags.LIMITS.items() if limit.option.startswith("--")}
    assert set(cli) == {"wrong_label", "off_topic", "duplicate", "relabel"}
    for name, limit in cli.items():
        param = params[limit.option]
        assert param.default == getattr(default, name) and param.help == limit.help, name
    for name, limit in flags.LIMITS.items():
        if name not in cli:
            assert limit.option == f"thresholds.{name}"


@pytest.mark.parametrize("name", ["wrong_label", "off_topic", "duplicate", "dark", "aspect"])
def test_an_out_of_range_threshold_names_its_option(name):
    limit = flags.LIMITS[name]
    bad = dataclasses.replace(flags.Thresholds(), **{name: limit.high + 1})
    with pytest.raises(UsageError, match=rf"^{limit.option} must be a number (from|above) "):
        bad.check()
    with pytest.raises(UsageError, match=limit.option):
        dataclasses.replace(flags.Thresholds(), **{name: "x"}).check()


def _one_photo_past(*reasons: str):
    """Scores and statistics of one photo (class a of two) past the thresholds of
    ``reasons`` and no other."""
    from pathlib import Path

    import numpy as np

    from mtl.review.quality import Stats
    from mtl.review.scores import Scores

    t = flags.Thresholds()
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    if "wrong_label" in reasons:
        probs[0] = [0.01, 0.99]
    off = np.array([t.off_topic * 2 if "off_topic" in reasons else 0.0, 0.0])
    dup = np.array([1 if "duplicate" in reasons else -1, -1])
    sim = np.array([0.99 if "duplicate" in reasons else 0.0, 0.0])
    stats = Stats(
        brightness=t.dark / 2 if "dark" in reasons else 0.5,
        sharpness=t.blurry / 2 if "blurry" in reasons else 0.01,
        aspect=t.aspect * 2 if "odd_aspect" in reasons else 1.5,
        width=600,
        height=200,
        detail_area=t.tiny / 2 if "tiny_subject" in reasons else 1.0,
    )
    plain = Stats(0.5, 0.01, 1.5, 300, 200)
    scores = Scores(probs, probs[:, 0].copy(), 1.0, off, "imagenet-concepts", dup, sim)
    paths = [Path("a/0.jpg"), Path("b/1.jpg")]
    labels = np.array([0, 1])
    return flags.find(paths, labels, ["a", "b"], scores, [stats, plain], t)


@pytest.mark.parametrize("reason", flags.REASONS)
def test_every_reason_is_found_alone(reason):
    found = _one_photo_past(reason)
    assert [(f.index, f.reason) for f in found] == [(0, reason)]
    assert 0.5 <= found[0].score <= 1.0 and found[0].detail
    assert (found[0].suggested == "b") == (reason == "wrong_label")


def test_the_first_reason_in_the_table_wins():
    names = list(flags.REASONS)
    for i, name in enumerate(names):
        found = _one_photo_past(*names[i:])
        assert [f.reason for f in found] == [name]


def test_the_page_and_help_say_every_reason_in_words(cli):
    from pathlib import Path

    from mtl.review import report

    counts = {r: 1 for r in flags.REASONS}
    page = report.render(Path("data"), ["a", "b"], [], counts, 7, "settings")
    helped = " ".join(cli.invoke(app, ["review", "--help"], terminal_width=200).stdout.split())
    for r in flags.REASON_TABLE:
        assert f"<td class='{r.name}'>{r.name}</td><td>1</td><td>{r.meaning}</td>" in page
        assert f"{r.name} ({r.meaning}" in helped, r.name
        if r.colour:
            assert f".{r.name}{{color:{r.colour}}}" in page


# Option aliases ---------------------------------------------------------------------------

SHARED = {
    "quiet": ["--quiet", "-q"],
    "verbose": ["--verbose", "-v"],
    "weights_dir": ["--weights-dir"],
    "cache_dir": ["--cache-dir"],
    "labels": ["--labels"],
}


def test_shared_options_have_the_same_names_in_every_command():
    """Whether a command declares it as an alias (``quiet: Quiet = False``) or as a default
    (train: ``quiet: bool = quiet_option()``)."""
    for command in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        opts = options_of(command)
        assert opts["quiet"] == SHARED["quiet"] and opts["verbose"] == SHARED["verbose"]
        for name in set(opts) & set(SHARED):
            assert opts[name] == SHARED[name], (command, name)

"""Settings say what runs: options that cannot run together are refused, and the ones a
run cannot honour are recorded as off (issue 33)."""

from __future__ import annotations

import json

import pytest

from mtl.errors import UsageError
from mtl.pipeline import config


@pytest.mark.parametrize("options", [{"augment": True}, {"fine_tune_epochs": 2}, {"freeze": "20"}])
def test_a_run_that_is_not_pooled_records_views_refit_and_prior_as_off(options):
    cfg = config.resolve(None, options)
    assert (cfg.views, cfg.refit, cfg.prior) == (["image"], False, False)
    assert cfg.to_dict()["views"] == ["image"] and cfg.to_dict()["refit"] is False


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"augment": True, "views": "image,flip"}, ("--views image,flip", "--augment")),
        ({"fine_tune_epochs": 2, "refit": True}, ("--refit true", "--fine-tune-epochs 2")),
        ({"freeze": "20", "prior": True}, ("--prior true", "--freeze 20")),
    ],
)
def test_options_asked_for_together_that_cannot_run_are_refused(options, names):
    with pytest.raises(UsageError) as err:
        config.resolve(None, options)
    assert all(n in err.value.message for n in names), err.value.message
    assert "\n" not in err.value.message


def test_a_preset_at_its_defaults_combines_with_augment(tmp_path):
    cfg = config.resolve("default", {"augment": True})
    assert (cfg.views, cfg.refit, cfg.prior) == (["image"], False, False)
    preset = tmp_path / "p.toml"
    preset.write_text('views = ["image", "flip"]\n')
    with pytest.raises(UsageError, match="--views image,flip"):
        config.resolve(preset, {"augment": True})


def test_an_older_run_config_that_recorded_unused_settings_still_loads(tmp_path):
    """Runs before this change recorded views/refit/prior on in augmented runs: --resume
    and --config RUN/config.json read them as what ran."""
    saved = config.TrainConfig(augment=True).to_dict()  # views image,crop, refit, prior on
    (tmp_path / "config.json").write_text(json.dumps({"config": saved}))
    cfg = config.resolve(tmp_path / "config.json", {})
    assert cfg.augment and (cfg.views, cfg.refit, cfg.prior) == (["image"], False, False)


def test_the_cli_refuses_a_conflict_in_one_line_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from mtl.cli import app

    (tmp_path / "data" / "a").mkdir(parents=True)
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "data"), "--augment", "--views", "image,flip",
              "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--views image,flip" in result.stderr and "--augment" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"head": "33000"}, "--head must be at most 16 layers of at most 32768 units"),
        ({"head": "100000000"}, "Received head=.100000000"),
        ({"head": "30000,30000"}, "100,000,000 parameters"),
        ({"head": ",".join(["8"] * 17)}, "at most 16 layers"),
        ({"epochs": 10**9}, "--epochs must be 1 to 100000"),
        ({"batch_size": 10**9}, "--batch-size must be 1 to 1048576"),
        ({"fine_tune_layers": 10**9}, "--fine-tune-layers must be 1 to 10000"),
    ],
)
def test_numeric_options_are_bounded_where_they_are_parsed(options, words):
    """Bounds derived from what later stages accept: a head the loader could not open
    after the refit doubles it is refused before any work (issue 34 E)."""
    with pytest.raises(UsageError, match=words):
        config.resolve(None, options)


def test_the_largest_head_allowed_saves_a_model_the_loader_accepts():
    from mtl.model.modelio import MAX_UNITS

    assert 2 * config.MAX_HEAD_UNITS <= MAX_UNITS
    assert config.resolve(None, {"head": "16384"}).head == [16384]  # under both limits
    assert config.resolve(None, {"head": "4096,4096,4096"}).head == [4096] * 3


def test_a_model_whose_fit_layer_would_decode_a_huge_square_is_refused(tmp_path):
    import zipfile

    from mtl.errors import ModelFileError
    from mtl.model.modelio import check_model_file

    layer = {"class_name": "CenterSquare", "config": {"name": "fit", "size": 50000}}
    model = {"class_name": "Functional", "config": {"layers": [layer]}}
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(model))
    with pytest.raises(ModelFileError, match="resizes to 50000 pixels a side"):
        check_model_file(path)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--limit", "100000000000"], "--limit must be 1 to 100000"),
        (["--max-mb", "1e12"], "--max-mb must be above 0 and at most 1024"),
        (["--timeout", "1e9"], "--timeout must be at most 3600 s"),
    ],
)
def test_fetch_bounds_its_numbers_before_any_request(tmp_path, args, words):
    from typer.testing import CliRunner

    from mtl.cli import app

    result = CliRunner().invoke(app, ["fetch", "crow", "--out", str(tmp_path / "d"), *args])
    assert result.exit_code == 2, result.output
    assert words in result.stderr and not (tmp_path / "d").exists()

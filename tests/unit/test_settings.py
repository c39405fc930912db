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

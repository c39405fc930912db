"""`mtl evaluate`: numbers equal scikit-learn's on the same predictions; clear class mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics

from mtl.cli import app


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


@pytest.fixture(scope="module")
def test_set(trained_model, tmp_path_factory) -> Path:
    """The validation photos, one folder per class, plus one broken file."""
    root = tmp_path_factory.mktemp("test_set")
    for f, y in zip(trained_model.val_files, trained_model.val_labels, strict=True):
        _link(f, root / trained_model.class_names[y] / f.name)
    (root / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def report(trained_model, test_set):
    from mtl.inference.evaluate import evaluate

    return evaluate(trained_model.path, test_set)


@pytest.fixture(scope="module")
def cli_json(trained_model, test_set, tmp_path_factory):
    from typer.testing import CliRunner

    plot = tmp_path_factory.mktemp("plot") / "confusion.png"
    args = ["evaluate", str(trained_model.path), str(test_set), "--json", "--plot", str(plot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr, plot


def test_metrics_match_scikit_learn(report):
    y_true, y_pred = np.array(report.y_true), np.array(report.y_pred)
    assert report.accuracy == pytest.approx(metrics.accuracy_score(y_true, y_pred), abs=1e-12)
    p, r, f, s = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1], zero_division=0
    )
    for i, m in enumerate(report.per_class):
        assert (m.precision, m.recall, m.f1, m.support) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert report.macro_f1 == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro"))
    np.testing.assert_array_equal(
        report.confusion, metrics.confusion_matrix(y_true, y_pred, labels=[0, 1])
    )


def test_predictions_are_the_models(report, trained_model):
    """The evaluated predictions are the trained model's own, computed independently."""
    # Keyed by resolved path: the report lists the test set's links resolved, and
    # ../shared may itself be reached through a link.
    expected = {
        str(f.resolve()): int(np.argmax(row))
        for f, row in zip(trained_model.val_files, trained_model.val_probabilities, strict=True)
    }
    truth = {
        str(f.resolve()): int(y)
        for f, y in zip(trained_model.val_files, trained_model.val_labels, strict=True)
    }
    assert len(report.files) == len(expected) == 122
    for file, t, q in zip(report.files, report.y_true, report.y_pred, strict=True):
        original = str(Path(file).resolve())
        assert expected[original] == q and truth[original] == t
    assert 0.8 < report.accuracy < 1.0  # a really trained head on a hard-ish split


def test_json_report(cli_json, report):
    data, stderr, plot = cli_json
    assert data["accuracy"] == pytest.approx(report.accuracy, abs=1e-6)
    assert data["images"] == 122 and data["correct"] == int(np.trace(report.confusion))
    assert set(data["per_class"]) == {"ants", "bees"}
    assert data["confusion_matrix"]["matrix"] == report.confusion.tolist()
    wrong = {Path(m["file"]).name for m in data["misclassified"]}
    assert len(wrong) == len(report.misclassified) == data["images"] - data["correct"]
    for m in data["misclassified"]:
        assert m["true"] != m["predicted"] and m["probability"] >= 0.5
    # The broken file is counted apart, never as a wrong prediction.
    assert [Path(b["file"]).name for b in data["bad_files"]] == ["broken.jpg"]
    assert "broken.jpg" not in wrong
    assert sum(c["support"] for c in data["per_class"].values()) == 122
    assert "broken.jpg" in stderr and "not counted" in stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_output_and_plot_not_overwritten(cli, trained_model, cli_json):
    data, _, plot = cli_json
    before = plot.read_bytes()
    folder = Path(data["data"])
    args = ["evaluate", str(trained_model.path), str(folder / ".."), "--plot", str(plot)]
    result = cli.invoke(app, args)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert plot.read_bytes() == before
    result = cli.invoke(app, ["evaluate", str(trained_model.path), str(folder), "--show", "3"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "accuracy" in out and "precision" in out and "confusion matrix" in out
    assert Path(data["misclassified"][0]["file"]).stem in out
    assert Path(data["misclassified"][5]["file"]).stem not in out and "more" in out


def test_folder_with_a_class_the_model_does_not_know(cli, trained_model, tmp_path):
    for i, f in enumerate(trained_model.val_files[:2] + trained_model.val_files[-2:]):
        _link(f, tmp_path / ["ants", "wasps", "bees", "bees"][i] / f.name)
    result = cli.invoke(app, ["evaluate", str(trained_model.path), str(tmp_path)])
    assert result.exit_code == 2
    assert "wasps" in result.stderr and "ants, bees" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_model_class_missing_from_the_folder(cli, trained_model, tmp_path):
    ants = [
        f for f, y in zip(trained_model.val_files, trained_model.val_labels, strict=True) if y == 0
    ][:6]
    for f in ants:
        _link(f, tmp_path / "ants" / f.name)
    result = cli.invoke(app, ["evaluate", str(trained_model.path), str(tmp_path), "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert "bees" in result.stderr and "bees" in data["warnings"][0]
    assert data["per_class"]["bees"]["support"] == 0
    assert data["per_class"]["bees"]["recall"] == 0.0


def test_not_a_test_set(cli, trained_model, tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"")
    result = cli.invoke(app, ["evaluate", str(trained_model.path), str(tmp_path)])
    assert result.exit_code == 2 and "one folder per class" in result.stderr
    result = cli.invoke(app, ["evaluate", str(trained_model.path), str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no test set folder" in result.stderr

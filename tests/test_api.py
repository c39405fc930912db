"""The Python API, used as a notebook user would: import mtl, call the six functions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import mtl
from mtl.errors import MtlError, UsageError
from tests.conftest import ALPHA, HYMENOPTERA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api_data")
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for f in sorted((HYMENOPTERA / cls).iterdir())[:10]:
            shutil.copy(f, root / cls / f.name)
    return root


def test_train_predict_evaluate_export(data, tmp_path):
    import keras

    seen: list[int] = []

    class Count(keras.callbacks.Callback):  # any Keras callback runs every epoch
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    run = mtl.train(data, alpha=ALPHA, epochs=3, views=["image", "flip"], out=tmp_path / "run",
                    callbacks=[Count()], seed=1)  # fmt: skip
    assert run.model_path.is_file() and run.classes == ["ants", "bees"]
    assert run.val_metrics is not None and 0.0 <= run.val_metrics["accuracy"] <= 1.0
    assert seen == [0, 1, 2]  # the validated run only: the refit is reported apart
    assert json.loads(json.dumps(run.to_json()))["model"] == str(run.model_path)

    report = mtl.predict(run.run_dir, HYMENOPTERA / "ants" / "0013035.jpg", top_k=2)
    assert len(report.results) == 1 and report.results[0].ok
    assert {p.label for p in report.results[0].predictions} == {"ants", "bees"}

    held_out = mtl.evaluate(run.run_dir, split="val")
    assert held_out.images == run.val_metrics["count"] == 4
    # The saved model was refit on every photo: the report says these are not held out.
    assert any("not held out" in w for w in held_out.warnings)

    exported = mtl.export(run.model_path, format="tflite", out=tmp_path / "m.tflite")
    assert exported.files[0].path.is_file()


def test_mirror_view_is_an_exact_mirror(data, tmp_path):
    """With views image+flip the model averages a photo and its mirror: a mirrored photo
    gets the same probabilities."""
    import numpy as np

    from mtl.data.images import load_image
    from mtl.model.modelio import load_model

    # The float32 base: the architecture's mirror is exact; the int8 base's emulation is
    # within its rounding (tests/test_int8_keras.py measures that).
    run = mtl.train(data, alpha=ALPHA, epochs=2, views=["image", "flip"], out=tmp_path / "r",
                    refit=False, base_precision="float32")  # fmt: skip
    model = load_model(run.model_path).model
    x = np.stack([load_image(f, 224) for f in sorted((data / "ants").iterdir())[:2]])
    x = x.astype("float32")
    np.testing.assert_allclose(
        model.predict_on_batch(x), model.predict_on_batch(x[:, :, ::-1]), atol=1e-5
    )


def test_errors_are_mtl_errors(tmp_path):
    with pytest.raises(MtlError, match="no such folder"):
        mtl.train(tmp_path / "missing", alpha=ALPHA)
    with pytest.raises(UsageError, match="did you mean"):
        mtl.train(tmp_path, alpha=ALPHA, epoch=3)


def test_review_takes_the_clis_keywords(data, tmp_path):
    """mtl.review(data, **settings): the options of `mtl review` as keywords, the base's
    checked as mtl train checks them, a typo refused with a suggestion (issue 33)."""
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    result = mtl.review(copy, alpha=ALPHA, folds=2, seed=3, label_threshold=0.5,
                        write_report=False, progress=False)  # fmt: skip
    assert result.total == 20 and result.thresholds.wrong_label == 0.5
    assert result._repr_html_().startswith('<table class="mtl">')
    with pytest.raises(UsageError, match="did you mean 'alpha'"):
        mtl.review(copy, alfa=ALPHA)
    with pytest.raises(UsageError, match="alpha in"):
        mtl.review(copy, alpha=0.8)

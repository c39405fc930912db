"""Keras callbacks passed to ``mtl.train`` get what Keras' own ``fit`` gives them."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import ALPHA, HYMENOPTERA


@pytest.mark.slow
def test_callbacks_see_val_loss_once_per_validated_epoch_and_early_stopping_stops(tmp_path):
    """``EarlyStopping(monitor="val_loss")`` really stops the validated fit, and
    ``CSVLogger`` holds exactly its epochs with the validation scores mtl reports; the
    refit on every photo is not reported to the callbacks."""
    import keras

    import mtl

    log_file = tmp_path / "epochs.csv"
    epochs = 25
    result = mtl.train(
        HYMENOPTERA,
        alpha=ALPHA,
        epochs=epochs,
        out=tmp_path / "run",
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=1),
            keras.callbacks.CSVLogger(str(log_file)),
        ],
    )
    assert result.cache["head_engine"] == "keras"
    validated = [h for h in result.history if h.phase == "train"]
    refit = [h for h in result.history if h.phase == "refit"]
    # The lowest validation loss comes within the first few epochs on these photos
    # (learning rate 1e-3): patience 1 stops long before the 25th.
    assert len(validated) < epochs
    assert len(refit) == result.kept_epoch == len(validated)
    with log_file.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) + 1 for r in rows] == [h.epoch for h in validated]
    for row, h in zip(rows, validated, strict=True):
        assert float(row["val_loss"]) == pytest.approx(h.val_loss, rel=1e-5)
        assert float(row["val_accuracy"]) == pytest.approx(h.val_accuracy, rel=1e-5)
        assert float(row["loss"]) == pytest.approx(h.loss, rel=1e-5)

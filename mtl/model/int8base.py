"""The int8 frozen base outside training: converted for ``mtl predict`` on a model trained
on it when the machine's cache lacks that base, and its float32 network for an int8 export.

The base is rebuilt exactly as training builds it (:func:`mtl.model.classifier.build_parts`
from the ImageNet weights the spec names, checked by SHA-256) and converted with the same
calibration images, so it is the same network as training's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mtl.assets import weights
from mtl.data.features import file_digest
from mtl.errors import ModelFileError
from mtl.model import backbones, calibration, litebase
from mtl.model.modelio import LoadedModel


def convert_for_predict(spec: litebase.BaseSpec) -> Path:
    """Convert and cache ``spec``'s base; its path (raises when it cannot be made)."""
    if spec.precision == "int8" and spec.calibration not in calibration.VERSIONS:
        raise ModelFileError(
            f"the model's int8 base was converted by a newer mtl (calibration "
            f"{spec.calibration}): upgrade mtl, or run model.keras itself "
            "(MTL_PREDICT_ENGINE=keras)"
        )
    flatbuffer = calibration.convert(
        _parts(spec).extractor, spec.input_side, spec.precision, spec.calibration
    )
    stored = litebase.store(spec, flatbuffer)
    if stored is None:
        raise ModelFileError(f"cannot write the converted base to {spec.path().parent}")
    return stored


def float_network(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` (trained on the int8 base, which its ``model.keras`` carries) with the
    float32 network that base was converted from, under the same head: what a full-integer
    export quantizes. The converter's own calibration then makes that network int8 again
    (int8 activations calibrate to the same ranges on any photos: docs/benchmarks.md),
    where quantizing the carried emulation, whose rounding is already float arithmetic,
    loses most of its accuracy."""
    spec = loaded.info.frozen_base
    assert spec is not None
    parts = _parts(spec, loaded.class_names, head=loaded.model.get_layer("head"), fit=loaded.fit)
    return dataclasses.replace(loaded, model=parts.model)


def _parts(spec: litebase.BaseSpec, classes: list[str] | None = None, **extra: Any) -> Any:
    from mtl.model.classifier import build_parts

    wfile = weights.resolve(
        backbones.weights_file(spec.model, spec.alpha, include_top=False, size=spec.size)
    )
    if file_digest(wfile) != spec.weights_digest:
        raise ModelFileError(
            f"the model's {spec.precision} base was made from other ImageNet weights than "
            f"{wfile}: point MTL_WEIGHTS_DIR at the ones it was trained with, or run "
            "model.keras itself (MTL_PREDICT_ENGINE=keras; an export without --quantize int8)"
        )
    return build_parts(
        classes or ["a", "b"],
        model=spec.model,
        alpha=spec.alpha,
        weights=wfile,
        size=spec.size,
        head_units=[],
        dropout=0.0,
        freeze_layers=spec.freeze,
        views=spec.views,
        input_size=spec.input_side,
        **extra,
    )

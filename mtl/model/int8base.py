"""The int8 frozen base converted outside training: for ``mtl predict`` on a model trained
with ``--base-precision int8`` on a machine whose cache lacks that base.

The base is rebuilt exactly as training builds it (:func:`mtl.model.classifier.build_parts`
from the ImageNet weights the spec names, checked by SHA-256) and converted with the same
calibration images, so it is the same network as training's.
"""

from __future__ import annotations

from pathlib import Path

from mtl.assets import weights
from mtl.data.features import file_digest
from mtl.errors import ModelFileError
from mtl.model import backbones, calibration, litebase


def convert_for_predict(spec: litebase.BaseSpec) -> Path:
    """Convert and cache ``spec``'s base; its path (raises when it cannot be made)."""
    from mtl.model.classifier import build_parts

    wfile = weights.resolve(
        backbones.weights_file(spec.model, spec.alpha, include_top=False, size=spec.size)
    )
    if file_digest(wfile) != spec.weights_digest:
        raise ModelFileError(
            f"the model was trained on a {spec.precision} base from other weights than "
            f"{wfile}; predict it with MTL_PREDICT_ENGINE=keras (float32)"
        )
    parts = build_parts(
        ["a", "b"],
        model=spec.model,
        alpha=spec.alpha,
        weights=wfile,
        size=spec.size,
        head_units=[],
        dropout=0.0,
        freeze_layers=spec.freeze,
        views=spec.views,
        input_size=spec.input_side,
    )
    flatbuffer = calibration.convert(parts.extractor, spec.input_side, spec.precision)
    stored = litebase.store(spec, flatbuffer)
    if stored is None:
        raise ModelFileError(f"cannot write the converted base to {spec.path().parent}")
    return stored

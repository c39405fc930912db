"""Exporting a trained model for deployment: one call, any row of the formats table
(:data:`mtl.deploy.formats.FORMATS`).

Every export takes what its users hold with the preprocessing inside (ONNX and
SavedModel: a decoded photo of any size, or its encoded bytes; TFLite: a photo resized
to its declared input) and states the model's facts (:class:`mtl.deploy.facts.ModelFacts`),
built once here. ``--force`` replaces only what mtl itself wrote
(:func:`check_replaceable`): never the source model, never a folder holding anything else.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl import reprs
from mtl.deploy.facts import ModelFacts, labels_text
from mtl.deploy.formats import (
    FORMATS,
    META_FILE,
    SERVING_VERSION,
    ExportedFile,
    FormatName,
    Job,
)
from mtl.errors import DataError, UsageError
from mtl.progress import ProgressFn

__all__ = [
    "FORMATS",
    "ExportReport",
    "ExportedFile",
    "FormatName",
    "check_replaceable",
    "export_model",
    "labels_text",
    "representative_images",
]

QUANTIZATIONS = ("none", "dynamic", "int8")


@dataclass
class ExportReport:
    source: ExportedFile
    format: str
    quantize: str
    files: list[ExportedFile] = field(default_factory=list)
    calibration_images: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": {"file": str(self.source.path), "bytes": self.source.bytes},
            "format": self.format,
            "quantize": self.quantize,
            "calibration_images": self.calibration_images,
            "files": [{"file": str(f.path), "bytes": f.bytes, "what": f.what} for f in self.files],
        }

    def __repr__(self) -> str:
        return reprs.short_repr(
            "ExportReport",
            {
                "format": self.format,
                "quantize": self.quantize,
                "files": [str(f.path) for f in self.files],
            },
        )

    def _repr_html_(self) -> str:
        rows = [[str(f.path), f.bytes, f.what] for f in self.files]
        caption = f"exported {self.source.path.name} ({self.format}, quantize {self.quantize})"
        return reprs.html_table(caption, ["file", "bytes", "what"], rows)


def default_output(model_path: Path, fmt: str, quantize: str) -> Path:
    """model.keras -> model.tflite, model.dynamic.tflite, model.int8.tflite,
    model_saved_model/, model.onnx."""
    return model_path.with_name(model_path.stem + FORMATS[fmt].suffix(quantize))


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_model(
    model_path: str | os.PathLike[str],
    *,
    fmt: str = "tflite",
    quantize: str = "none",
    representative: str | os.PathLike[str] | None = None,
    calibration_count: int = 100,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> ExportReport:
    """Export ``model_path`` (a model.keras from mtl train, or its run folder); files
    appear only when complete."""
    from mtl.inference.predict import resolve_model_path
    from mtl.model.modelio import load_model

    _check_options(fmt, quantize, representative, calibration_count)
    model_path = resolve_model_path(model_path)
    row = FORMATS[fmt]
    target = Path(out) if out is not None else default_output(model_path, fmt, quantize)
    labels_file = row.labels_place(target, force)
    check_replaceable(target, model_path, force=force, what=row.what)
    if labels_file != target and target not in labels_file.parents:  # a labels file beside
        check_replaceable(labels_file, model_path, force=force)
    calibration: list[Path] = []
    if quantize == "int8":
        assert representative is not None
        calibration, _ = representative_images(representative, calibration_count)

    loaded = load_model(model_path)
    facts = ModelFacts.of(loaded, model_path)  # refuses names a labels file can't hold
    base = loaded.info.frozen_base
    if quantize == "int8" and base is not None and base.precision == "int8":
        from mtl.model.int8base import float_network

        loaded = float_network(loaded)
    report = ExportReport(
        source=ExportedFile(model_path, model_path.stat().st_size, "Keras model"),
        format=fmt,
        quantize=quantize,
        calibration_images=len(calibration),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        job = Job(
            loaded, facts, quantize, calibration, target, labels_file, work, force, on_progress
        )
        report.files += row.write(job)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_export(path: str | os.PathLike[str], fmt: str) -> Any:
    """An export read back by its own runtime (LiteRT, ONNX Runtime, TensorFlow's SavedModel
    loader): a callable on uint8 (n, size, size, 3) squares, with ``class_names``,
    ``image_size`` and ``fit``."""
    return FORMATS[fmt].read(Path(path))


# --- what --force may replace (issue: replacing outputs destroyed what was not one) -----


def check_replaceable(path: Path, source: Path, *, force: bool, what: str = "file") -> None:
    """Refuse to write ``path`` where that would destroy anything but an earlier export of
    mtl's: the source model (or a folder holding it), a link, a special file, a file mtl
    did not write, a folder holding anything else. Without ``force`` any existing output
    is refused. Called before any slow work."""
    from mtl import files

    if _same_or_inside(source, path):
        raise UsageError(f"{path} is the model being exported (or holds it): choose another --out")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        files.check_writable(path, what=what)
        return
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"{path} is a symbolic link: mtl export does not write through links")
    if not force:
        raise UsageError(f"{what} {path} already exists (use --force to overwrite it)")
    why = _not_an_export(path, info, what)
    if why:
        raise UsageError(f"--force replaces only an earlier export of mtl's: {path} {why}")
    files.check_writable(path, what=what)


def _same_or_inside(source: Path, path: Path) -> bool:
    """Whether ``path`` is ``source`` or a folder above it (links resolved)."""
    try:
        real_source, real_path = source.resolve(), path.resolve()
    except OSError:
        return False
    return real_source == real_path or real_path in real_source.parents


def _not_an_export(path: Path, info: os.stat_result, what: str) -> str | None:
    """Why ``path`` is not something mtl export wrote; None when it is one."""
    if what == "folder":
        if not stat.S_ISDIR(info.st_mode):
            return "is not a folder"
        entries = sorted(p.name for p in path.iterdir())
        marker = path / SERVING_VERSION / "assets" / META_FILE
        if entries != [SERVING_VERSION] or not marker.is_file():
            held = ", ".join(entries[:5]) or "nothing"
            return f"is not a SavedModel folder of mtl export (it holds {held})"
        return None
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    name = path.name.lower()
    try:
        if name.endswith(".tflite"):
            return None if _tflite_of_mtl(path) else "was not written by mtl export"
        if name.endswith(".onnx"):
            return None if _onnx_of_mtl(path) else "was not written by mtl export"
        if name.endswith(".labels.txt"):
            from mtl.inference.tflite import read_labels

            read_labels(path)
            return None
    except Exception:  # unreadable: not recognisably ours
        return "was not written by mtl export (unreadable)"
    return "was not written by mtl export"


def _tflite_of_mtl(path: Path) -> bool:
    from mtl.inference.tflite import INFO_METADATA
    from mtl.litert import read_metadata

    return read_metadata(path.read_bytes(), INFO_METADATA) is not None


def _onnx_of_mtl(path: Path) -> bool:
    import onnx

    from mtl.inference.onnx import CLASS_NAMES_KEY

    proto = onnx.load(str(path), load_external_data=False)
    return any(p.key == CLASS_NAMES_KEY for p in proto.metadata_props)


def representative_images(data_dir: str | os.PathLike[str], count: int) -> tuple[list[Path], int]:
    """Up to ``count`` images spread evenly over ``data_dir`` (recursively), and how many exist."""
    from mtl.data.images import list_images

    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"no representative data folder at {root}")
    found = list_images(root)
    if not found:
        raise DataError(f"no images in {root} to calibrate the int8 model on")
    if len(found) <= count:
        return found, len(found)
    picks = np.linspace(0, len(found) - 1, count).round().astype(int)
    return [found[i] for i in picks], len(found)


def _check_options(
    fmt: str,
    quantize: str,
    representative: str | os.PathLike[str] | None,
    calibration_count: int,
) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}. Received format={fmt!r}")
    if quantize not in QUANTIZATIONS:
        raise UsageError(
            f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received quantize={quantize!r}"
        )
    if not FORMATS[fmt].quantizable and quantize != "none":
        quantizable = ", ".join(f.name for f in FORMATS.values() if f.quantizable)
        raise UsageError(f"--quantize applies to --format {quantizable} only")
    if quantize == "int8" and representative is None:
        raise UsageError("--quantize int8 needs --representative DATA_DIR (photos to calibrate on)")
    if quantize != "int8" and representative is not None:
        raise UsageError("--representative is used by --quantize int8 only")
    if calibration_count < 1:
        raise UsageError(f"--calibration-images must be at least 1. Received {calibration_count}")

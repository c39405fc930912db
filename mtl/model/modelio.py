"""Saving and loading trained mtl models (``model.keras``) safely and atomically."""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl.errors import ModelFileError

# A real model.keras' config.json is tens of kB; a zip bomb's inflates to gigabytes.
MAX_CONFIG_BYTES = 64 * 2**20
# Pixels a side: MobileNet is trained at 128-224; anything past this is not a photo model.
MAX_INPUT_PIXELS = 4096


@dataclass
class LoadedModel:
    """A trained model with what travels inside it."""

    model: Any  # keras.Model: raw RGB 0-255 (n, size, size, 3) in, probabilities out
    class_names: list[str]
    image_size: int
    mtl_version: str
    info: dict[str, Any] = field(default_factory=dict)


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` atomically: the file appears only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, 0o644)  # mkstemp made it 0600; every other run file is 0644
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def find_class_names_layer(model: Any) -> Any | None:
    from mtl.model.layers import ClassNames

    for layer in reversed(model.layers):
        if isinstance(layer, ClassNames):
            return layer
    return None


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load an mtl ``model.keras`` in Keras safe mode (no code from the file ever runs)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not an mtl model (expected a .keras file from mtl train)")
    check_model_file(path)
    from mtl.model.layers import MODEL_FORMAT
    from mtl.runtime import keras

    k = keras()
    try:
        model = k.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a foreign or broken file
        raise ModelFileError(f"cannot load {path}: {_why_unloadable(path, exc)}") from None
    layer = find_class_names_layer(model)
    if layer is None:
        raise ModelFileError(
            f"{path} has no class names: it was not made by mtl train "
            "(use `mtl classify` for ImageNet models)"
        )
    if layer.model_format > MODEL_FORMAT:
        raise ModelFileError(
            f"{path} was made by mtl {layer.mtl_version} (model format {layer.model_format}); "
            f"this mtl reads format {MODEL_FORMAT} or older: upgrade mtl"
        )
    shape = model.input_shape
    names = list(layer.class_names)
    outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if not isinstance(outputs, int) or outputs != len(names):
        raise ModelFileError(
            f"{path} is damaged: it has {len(names)} class names but predicts {outputs} classes"
        )
    if not (
        isinstance(shape, tuple) and len(shape) == 4 and shape[1] == shape[2] and shape[3] == 3
    ):
        raise ModelFileError(f"{path} is not an mtl image classifier (input shape {shape})")
    return LoadedModel(
        model=model,
        class_names=names,
        image_size=int(shape[1]),
        mtl_version=layer.mtl_version,
        info=dict(layer.info),
    )


def check_model_file(path: Path) -> None:
    """Refuse a hostile ``.keras`` before Keras reads it: a ``config.json`` that would
    inflate past :data:`MAX_CONFIG_BYTES`, or an input larger than :data:`MAX_INPUT_PIXELS`
    a side (building such a model takes more memory than any machine has)."""
    import json

    try:
        with zipfile.ZipFile(path) as z:
            try:
                info = z.getinfo("config.json")
            except KeyError:
                raise ModelFileError(
                    f"cannot load {path}: not a Keras model file (a zip archive without "
                    "config.json)"
                ) from None
            # zipfile never inflates past the declared size, so checking it is enough.
            if info.file_size > MAX_CONFIG_BYTES:
                raise ModelFileError(
                    f"{path} is not an mtl model: its config.json inflates to "
                    f"{info.file_size} bytes (the limit is {MAX_CONFIG_BYTES // 2**20} MiB)"
                )
            config = json.loads(z.read(info))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"cannot load {path}: damaged Keras model file") from None
    for dims in _input_shapes(config):
        big = [d for d in dims if isinstance(d, int) and d > MAX_INPUT_PIXELS]
        if big:
            raise ModelFileError(
                f"{path} is not a usable mtl model: it declares an input of "
                f"{'x'.join(str(d) for d in dims[1:3])} pixels (the limit is "
                f"{MAX_INPUT_PIXELS} a side)"
            )


def _input_shapes(node: Any) -> list[list[Any]]:
    """Every input shape declared in a Keras config: ``InputLayer``s' ``batch_shape`` and
    any ``batch_input_shape`` (older files, layers given ``input_shape=``)."""
    found: list[list[Any]] = []
    if isinstance(node, dict):
        config = node.get("config")
        if node.get("class_name") == "InputLayer" and isinstance(config, dict):
            for key in ("batch_shape", "batch_input_shape"):
                if isinstance(config.get(key), list):
                    found.append(config[key])
        if isinstance(node.get("batch_input_shape"), list):
            found.append(node["batch_input_shape"])
        for value in node.values():
            found += _input_shapes(value)
    elif isinstance(node, list):
        for value in node:
            found += _input_shapes(value)
    return found


def _why_unloadable(path: Path, exc: Exception) -> str:
    """A one-line reason a .keras file did not load, naming what a user can act on."""
    import json

    try:
        with zipfile.ZipFile(path) as z:
            if "config.json" not in z.namelist():
                return "not a Keras model file (a zip archive without config.json)"
            config = json.loads(z.read("config.json"))
    except (OSError, zipfile.BadZipFile, ValueError):
        return "damaged Keras model file"
    import mtl.model.layers

    unknown: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            module, name = node.get("module"), node.get("class_name")
            is_ours = isinstance(module, str) and module.split(".")[0] == "mtl"
            if is_ours and isinstance(name, str) and not hasattr(mtl.model.layers, name):
                unknown.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    if unknown:
        return (
            f"it uses layers this mtl does not have ({', '.join(sorted(unknown))}); "
            "it was probably made by a newer mtl: upgrade mtl"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"not readable by this mtl and Keras ({first[:200]})"

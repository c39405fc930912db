"""Saving and loading trained mtl models (``model.keras``) safely and atomically."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtl import files
from mtl.errors import ModelFileError

FIT_LAYER = "fit"  # the saved model's first layer: any photo to the square (classifier)

if TYPE_CHECKING:
    from mtl.model.litebase import BaseSpec

# 2: the class names in mtl.json inside the file and Keras' own layers only (plain Keras
# loads it); 1: the class names in mtl's ClassNames layer (still read).
MODEL_FORMAT = 2

# A real model.keras' config.json is tens of kB; a zip bomb's inflates to gigabytes.
MAX_CONFIG_BYTES = 64 * 2**20
# Pixels a side: MobileNet is trained at 128-224; anything past this is not a photo model.
MAX_INPUT_PIXELS = 4096
# A .keras config declaring more is refused before Keras builds it: MobileNetV2 1.4 with
# its ImageNet top has 6.2M parameters, mtl's heads far fewer; no layer is this wide.
MAX_PARAMS = 100_000_000
MAX_UNITS = 1 << 16


@dataclass(frozen=True)
class ModelInfo:
    """How a saved model was built: the ``info`` of its ``mtl.json``, read and written
    here only (:func:`model_meta`, :func:`with_info`, :func:`read_info`).

    ``None``: not recorded (a file from before the field, or made by another tool)."""

    model: str | None = None
    alpha: float | None = None
    image_size: int | None = None
    fit: str = "squash"  # the files from before the choice squashed
    views: tuple[str, ...] | None = None
    refit: bool | None = None  # the saved head was refit on every photo (train + val)
    # The LiteRT spec of the whole frozen base and the head's kernel, bias places in
    # model.weights.h5: what running the file without Keras takes (mtl.inference.litekeras).
    frozen_base: BaseSpec | None = None
    head_weights: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "model": self.model,
            "alpha": self.alpha,
            "image_size": self.image_size,
            "fit": self.fit,
            "views": list(self.views) if self.views is not None else None,
            "refit": self.refit,
            "frozen_base": self.frozen_base.to_json() if self.frozen_base else None,
            "head_weights": list(self.head_weights) if self.head_weights is not None else None,
        }
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_json(cls, info: dict[str, Any], where: str = "the model") -> ModelInfo:
        """The record a file holds; a field of the wrong type reads as not recorded, an
        unknown fit is refused (:func:`fit_of`)."""
        from mtl.model.litebase import BaseSpec

        def typed(key: str, kind: type | tuple[type, ...]) -> Any:
            value = info.get(key)
            return value if isinstance(value, kind) and not isinstance(value, bool) else None

        views, places = _strings(info.get("views")), _strings(info.get("head_weights"))
        return cls(
            model=typed("model", str),
            alpha=typed("alpha", (int, float)),
            image_size=typed("image_size", int),
            fit=fit_of(info, where),
            views=views,
            refit=info["refit"] if isinstance(info.get("refit"), bool) else None,
            frozen_base=BaseSpec.from_json(info.get("frozen_base")),
            head_weights=places,
        )


def _strings(value: Any) -> tuple[str, ...] | None:
    """A list of strings, as a tuple; None for anything else."""
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return tuple(value) if ok else None


@dataclass
class LoadedModel:
    """A trained model with what travels inside it."""

    model: Any  # keras.Model: raw RGB 0-255 (n, height, width, 3) in, probabilities out
    class_names: list[str]
    image_size: int  # the square side the network sees (after its fit layer)
    mtl_version: str
    info: ModelInfo = field(default_factory=ModelInfo)

    @property
    def fit(self) -> str:
        return self.info.fit

    def square_model(self) -> Any:
        """The network from its square input on (without the fit layer, which takes any
        photo): what exports convert, (n, image_size, image_size, 3) RGB 0-255 in."""
        layer = fit_layer_of(self.model)
        if layer is None:
            return self.model  # made before the fit layer: square input already
        from mtl.runtime import keras

        return keras().Model(layer.output, self.model.output, name=self.model.name)


def fit_layer_of(model: Any) -> Any | None:
    """The model's first layer making any photo its square input, or None (older models)."""
    for layer in model.layers[:2]:
        if layer.name == FIT_LAYER:
            return layer
    return None


def fit_of(info: dict[str, Any], where: str = "the model") -> str:
    """How ``info``'s model wants photos made square (:data:`mtl.data.images.FITS`):
    "squash" for models made before the choice existed."""
    from mtl.data.images import FITS

    fit = info.get("fit", "squash")
    if fit not in FITS:
        raise ModelFileError(f"{where} is damaged: unknown fit {str(fit)[:40]!r} in mtl.json")
    return str(fit)


META_ENTRY = "mtl.json"  # inside model.keras, beside Keras' own entries (Keras ignores it)
MAX_META_BYTES = 16 << 20


def model_meta(class_names: list[str], info: ModelInfo | None = None) -> dict[str, Any]:
    """What travels inside ``model.keras`` besides the network: the class names in output
    order, mtl's version and model format, and how the model was built."""
    from mtl._version import __version__

    return {
        "model_format": MODEL_FORMAT,
        "class_names": [str(c) for c in class_names],
        "mtl_version": __version__,
        "info": (info or ModelInfo()).to_json(),
    }


def with_info(meta: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``meta`` (:func:`model_meta`) with some of its :class:`ModelInfo` fields changed."""
    info = dataclasses.replace(ModelInfo.from_json(meta.get("info", {})), **changes)
    return {**meta, "info": info.to_json()}


def read_info(path: Path) -> ModelInfo | None:
    """The record inside the ``model.keras`` at ``path``; None without one (or no file)."""
    if not path.is_file():
        return None
    meta = read_meta(path)
    return ModelInfo.from_json(meta["info"], str(path)) if meta is not None else None


def save_model(
    model: Any, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``path`` atomically: the file appears only when complete.

    ``meta`` (:func:`model_meta`) goes into the file as ``mtl.json``: the network itself
    is made of Keras' own layers only, so plain ``keras.saving.load_model`` reads it
    without mtl, and the class names still travel inside the one file.
    """
    path = Path(path)
    files.refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        if meta is not None:
            with zipfile.ZipFile(tmp, "a") as z:
                z.writestr(META_ENTRY, json.dumps(meta, ensure_ascii=False, indent=1))
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
    from mtl.runtime import keras

    meta = read_meta(path)
    k = keras()
    try:
        model = k.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a foreign or broken file
        raise ModelFileError(f"cannot load {path}: {_why_unloadable(path, exc)}") from None
    if meta is None:  # model format 1: the names in mtl's own ClassNames layer
        layer = find_class_names_layer(model)
        if layer is None:
            raise ModelFileError(
                f"{path} has no class names: it was not made by mtl train "
                "(use `mtl classify` for ImageNet models)"
            )
        meta = model_meta(list(layer.class_names), ModelInfo.from_json(dict(layer.info)))
        meta.update(model_format=layer.model_format, mtl_version=layer.mtl_version)
    if int(meta["model_format"]) > MODEL_FORMAT:
        raise ModelFileError(
            f"{path} was made by mtl {meta['mtl_version']} (model format "
            f"{meta['model_format']}); this mtl reads format {MODEL_FORMAT} or older: upgrade mtl"
        )
    shape = model.input_shape
    names = list(meta["class_names"])
    check_unique(names, path)
    outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if not isinstance(outputs, int) or outputs != len(names):
        raise ModelFileError(
            f"{path} is damaged: it has {len(names)} class names but predicts {outputs} classes"
        )
    side = shape[1] if isinstance(shape, tuple) and len(shape) == 4 else None
    if side is None:  # any photo in: its fit layer says the square it makes
        layer = fit_layer_of(model)
        side = getattr(layer, "height", None) if layer is not None else None
        if side != getattr(layer, "width", None):
            side = None
    if not (
        isinstance(shape, tuple)
        and len(shape) == 4
        and shape[1] == shape[2]
        and shape[3] == 3
        and isinstance(side, int)
    ):
        raise ModelFileError(f"{path} is not an mtl image classifier (input shape {shape})")
    return LoadedModel(
        model=model,
        class_names=names,
        image_size=int(side),
        mtl_version=str(meta["mtl_version"]),
        info=ModelInfo.from_json(meta["info"], str(path)),
    )


def check_unique(names: list[str], where: object) -> None:
    """Class names must be distinct: two outputs of one name cannot be told apart."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ModelFileError(f"{where} is damaged: the class name {name!r} appears twice")
        seen.add(name)


def read_meta(path: Path) -> dict[str, Any] | None:
    """``mtl.json`` from inside ``path``, checked; None for a file without one."""
    try:
        with zipfile.ZipFile(path) as z:
            if META_ENTRY not in z.namelist():
                return None
            if z.getinfo(META_ENTRY).file_size > MAX_META_BYTES:
                raise ModelFileError(f"{path} is damaged: its {META_ENTRY} is too large")
            meta = files.loads_json(z.read(META_ENTRY).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is damaged: cannot read its {META_ENTRY} ({exc})") from None
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or not isinstance(meta.get("model_format"), int)
        or not isinstance(meta.get("info", {}), dict)
    ):
        raise ModelFileError(f"{path} is damaged: its {META_ENTRY} has no valid class names")
    check_unique(names, path)
    meta.setdefault("info", {})
    meta.setdefault("mtl_version", "unknown")
    return meta


def check_model_file(path: Path) -> None:
    """Refuse a hostile ``.keras`` before Keras reads it: a ``config.json`` that would
    inflate past :data:`MAX_CONFIG_BYTES`, or an input larger than :data:`MAX_INPUT_PIXELS`
    a side (building such a model takes more memory than any machine has)."""

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
            config = files.loads_json(z.read(info))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"cannot load {path}: damaged Keras model file") from None
    for layer, side in _declared_sides(config):
        if side > MAX_INPUT_PIXELS:
            raise ModelFileError(
                f"{path} is not a usable mtl model: its layer {layer} resizes to {side} pixels "
                f"a side (the limit is {MAX_INPUT_PIXELS})"
            )
    for dims in _input_shapes(config):
        big = [d for d in dims if isinstance(d, int) and d > MAX_INPUT_PIXELS]
        if big:
            raise ModelFileError(
                f"{path} is not a usable mtl model: it declares an input of "
                f"{'x'.join(str(d) for d in dims[1:3])} pixels (the limit is "
                f"{MAX_INPUT_PIXELS} a side)"
            )
    params = 0
    for name, width, weights in _layer_sizes(config):
        if width > MAX_UNITS:
            raise ModelFileError(
                f"{path} is not a usable mtl model: its layer {name} declares {width} units "
                f"(the limit is {MAX_UNITS})"
            )
        params += weights
    if params > MAX_PARAMS:
        raise ModelFileError(
            f"{path} is not a usable mtl model: its config declares about {params} parameters "
            f"(the limit is {MAX_PARAMS})"
        )


_WIDTH_KEYS = ("units", "filters", "output_dim", "input_dim", "depth_multiplier", "key_dim")


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a Keras config, depth first (the reader bounds its depth)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _layer_sizes(node: Any) -> list[tuple[str, int, int]]:
    """(layer name, widest declared size, estimated parameters) for every layer in a Keras
    config; the estimate multiplies the layer's widths and kernel by the last dimension of
    the input shape Keras 3 records in its ``build_config``."""
    found: list[tuple[str, int, int]] = []
    for obj in _objects(node):
        config = obj.get("config")
        if not (isinstance(obj.get("class_name"), str) and isinstance(config, dict)):
            continue
        widths = [config[k] for k in _WIDTH_KEYS if isinstance(config.get(k), int)]
        if not widths:
            continue
        kernel = config.get("kernel_size")
        area = 1
        for k in kernel if isinstance(kernel, list) else [kernel]:
            area *= k if isinstance(k, int) and k > 0 else 1
        build = obj.get("build_config")
        shape = build.get("input_shape") if isinstance(build, dict) else None
        last = shape[-1] if isinstance(shape, list) and shape else None
        fan_in = last if isinstance(last, int) and last > 0 else 1
        weights = area * (fan_in + 1)
        for w in widths:
            weights *= max(w, 1)
        found.append((str(config.get("name", obj["class_name"])), max(widths), weights))
    return found


def _declared_sides(node: Any) -> list[tuple[str, int]]:
    """Every output side a layer's config declares (``height``/``width``/``size``: the
    fit, resize and crop layers), so a file cannot make a photo decode to 50000x50000."""
    found: list[tuple[str, int]] = []
    for obj in _objects(node):
        config = obj.get("config")
        if isinstance(config, dict):
            name = str(config.get("name", obj.get("class_name", "?")))[:80]
            for key in ("height", "width", "size"):
                value = config.get(key)
                values = value if isinstance(value, list) else [value]
                found += [(name, v) for v in values if isinstance(v, int) and v > 0]
    return found


def _input_shapes(node: Any) -> list[list[Any]]:
    """Every input shape declared in a Keras config: ``InputLayer``s' ``batch_shape`` and
    any ``batch_input_shape`` (older files, layers given ``input_shape=``)."""
    found: list[list[Any]] = []
    for obj in _objects(node):
        config = obj.get("config")
        if obj.get("class_name") == "InputLayer" and isinstance(config, dict):
            for key in ("batch_shape", "batch_input_shape"):
                if isinstance(config.get(key), list):
                    found.append(config[key])
        if isinstance(obj.get("batch_input_shape"), list):
            found.append(obj["batch_input_shape"])
    return found


def _why_unloadable(path: Path, exc: Exception) -> str:
    """A one-line reason a .keras file did not load, naming what a user can act on."""

    try:
        with zipfile.ZipFile(path) as z:
            if "config.json" not in z.namelist():
                return "not a Keras model file (a zip archive without config.json)"
            config = files.loads_json(z.read("config.json"))
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

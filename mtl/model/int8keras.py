"""The int8 frozen base as Keras layers: what ``model.keras`` carries after an int8 run.

A run with ``--base-precision int8`` trains its head on the features of the int8
base that LiteRT runs (:mod:`mtl.model.calibration`). Saved on the float32 MobileNet,
that head would be fed other features by every plain-Keras consumer of
``model.keras``: on small upsized images they are far enough apart (cosine 0.85-0.88)
that accuracy fell 11 points on eurosat and 31 on 8x8 digits
(docs/benchmarks.md). So the saved model carries the int8 network itself, read
from the converted ``.tflite``: each convolution with its int8 weights and int32
bias as float values, and after each op that TFLite quantizes its output, the same
rounding to that tensor's int8 grid (the step's index as an int32 cast, then
``Rescaling`` back to its value: only Keras' own layers, so plain Keras loads it and
every export converts it).

The emulation computes in float32 what LiteRT computes in integers; the two
differ where a value falls within float rounding of a grid step's midpoint, and in
the image view's resize (LiteRT's int8 resize weighs pixels in fixed point). Such
one-step differences spread through the layers but stay small: pooled features at
0.999 cosine to LiteRT's (``tests/test_int8_keras.py`` bounds it on real photos).

Supported: the frozen parts ``mtl.model.classifier`` builds for MobileNet v1
(a chain of convolutions, batch norms and ReLU6) with the views ``image``, ``crop``
and their mirrors; anything else raises :class:`NotEmulable` before a layer is built
(:data:`SUPPORTED_MODELS`, :data:`SUPPORTED_VIEWS`: the settings check them up front).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl.errors import MtlError
from mtl.runtime import keras as _keras

# Bump when the layers built here change: saved-model skeletons of int8 runs are then
# built anew (mtl.model.skeleton.arch).
FORMAT = 2  # 2: no Discretization (ONNX lacks Bucketize), views' layers named once
SUPPORTED_MODELS = ("mobilenet",)
SUPPORTED_VIEWS = ("image", "flip", "crop", "crop_flip")

CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
# A view's Keras layers (mtl.model.classifier.view_layers) and the ops each becomes. A
# mirror is Permute, Dense (a permutation matrix: int8 holds its ones exactly) and Permute.
VIEW_OPS = {
    "CenterCrop": ("STRIDED_SLICE",),
    "Resizing": ("RESIZE_BILINEAR",),
    "Permute": ("TRANSPOSE",),
    "Dense": ("RESHAPE", "FULLY_CONNECTED", "RESHAPE"),
}
# Of those, the ops that compute new values, rounded to their output's grid.
ROUNDED_VIEW_OPS = ("RESIZE_BILINEAR", "FULLY_CONNECTED")
# Ops whose output keeps its input's grid and values (no rounding to emulate).
SAME_GRID = ("STRIDED_SLICE", "RESHAPE")


class NotEmulable(MtlError):
    """The converted base is not one this module can rebuild in Keras."""


@dataclass(frozen=True)
class Grid:
    """An int8 tensor's values: ``(q - zero_point) * scale`` for q in [-128, 127]."""

    scale: float
    zero_point: int

    def values(self) -> np.ndarray:
        return (np.arange(-128, 128, dtype=np.float64) - self.zero_point) * self.scale


@dataclass
class Graph:
    """The ``.tflite`` ops, tensors and constants this module reads."""

    ops: list[dict[str, Any]]
    tensors: dict[int, dict[str, Any]]
    producer: dict[int, dict[str, Any]]
    input_index: int
    output_index: int
    interp: Any  # keeps every tensor: constants, and what :meth:`table` reads

    @classmethod
    def read(cls, source: Path | bytes) -> Graph:
        from ai_edge_litert.interpreter import Interpreter

        from mtl.runtime import quiet_native_stderr

        with quiet_native_stderr(), warnings.catch_warnings():
            # "preserve_all_tensors is for debugging": it is what :meth:`table` reads.
            warnings.simplefilter("ignore", UserWarning)
            if isinstance(source, bytes):
                interp = Interpreter(model_content=source, experimental_preserve_all_tensors=True)
            else:
                interp = Interpreter(model_path=str(source), experimental_preserve_all_tensors=True)
            interp.allocate_tensors()
        ops = list(interp._get_ops_details())  # noqa: SLF001 - LiteRT's only op listing
        ops = [op for op in ops if op["op_name"] != "DELEGATE"]
        tensors = {int(t["index"]): t for t in interp.get_tensor_details()}
        producer = {int(o): op for op in ops for o in op["outputs"]}
        return cls(
            ops,
            tensors,
            producer,
            int(interp.get_input_details()[0]["index"]),
            int(interp.get_output_details()[0]["index"]),
            interp,
        )

    def table(self, index: int) -> np.ndarray:
        """Tensor ``index``'s value for each pixel value 0-255 fed to every input channel
        (float; for a tensor that depends on each input value alone)."""
        shape = [int(d) for d in self.tensors[self.input_index]["shape"]]
        pixels = np.resize(np.arange(256, dtype=np.float32), int(np.prod(shape))).reshape(shape)
        self.interp.set_tensor(self.input_index, pixels)
        self.interp.invoke()
        grid = self.grid(index)
        got = self.interp.get_tensor(index).astype(np.float64).reshape(-1)
        out = (got - grid.zero_point) * grid.scale
        fed = pixels.astype(int).reshape(-1)  # every value 0-255, at many positions
        table = np.zeros(256)
        table[fed] = out
        if not np.array_equal(table[fed], out):
            raise NotEmulable("the preprocessing is not a function of the pixel value alone")
        return table.astype(np.float32)

    def grid(self, index: int) -> Grid:
        t = self.tensors[int(index)]
        if t["dtype"] != np.int8:
            raise NotEmulable(f"tensor {t['name']!r} is {t['dtype'].__name__}, not int8")
        q = t["quantization_parameters"]
        if len(q["scales"]) != 1:
            raise NotEmulable(f"tensor {t['name']!r} has per-channel activations")
        return Grid(float(q["scales"][0]), int(q["zero_points"][0]))

    def dequantized(self, index: int) -> np.ndarray:
        """A constant's float values, per channel where it is quantized per channel."""
        t = self.tensors[int(index)]
        q = t["quantization_parameters"]
        raw = np.array(self.interp.get_tensor(int(index))).astype(np.float64)
        scales, zeros = np.asarray(q["scales"], np.float64), np.asarray(q["zero_points"])
        if len(scales) == 0:
            return raw
        shape = [1] * raw.ndim
        if len(scales) > 1:
            shape[int(q["quantized_dimension"])] = len(scales)
        return (raw - zeros.reshape(shape)) * scales.reshape(shape)

    def chain_back(self, tensor: int, stop: int) -> list[dict[str, Any]]:
        """The ops from ``stop`` (a tensor) to ``tensor`` along each op's first input."""
        chain = []
        while tensor != stop:
            op = self.producer.get(int(tensor))
            if op is None:
                raise NotEmulable(f"tensor {tensor} does not lead back to the preprocessed input")
            chain.append(op)
            tensor = int(op["inputs"][0])
        return chain[::-1]


@dataclass
class Emulation:
    """The Keras layers of the int8 base: ``prefix`` from raw pixels to the preprocessed
    input's grid, then one tower per view down to its pooled features (n, dim)."""

    prefix: list[Any]
    towers: dict[str, list[Any]]


class _Builder:
    """Makes the layers, sharing a grid's layers (and equal convolutions) between uses."""

    def __init__(self) -> None:
        self.keras = _keras()
        self.grids: dict[Grid, list[Any]] = {}
        self.convs: dict[tuple[str, bytes], Any] = {}

    def rounding(self, grid: Grid) -> list[Any]:
        """Round to ``grid`` (clamped to its 256 values), as TFLite quantizes an output.

        The step's index is ``floor(x / scale + 0.5)`` clamped to [0, 255]: the floor is
        the cast to int32 that Keras applies to a float input of an int32 layer (8x
        faster than ``Discretization``'s search, which ONNX cannot run either)."""
        if grid not in self.grids:
            k, lo = len(self.grids), float(grid.values()[0])
            layers = self.keras.layers
            self.grids[grid] = [
                layers.Rescaling(1.0 / grid.scale, 0.5 - lo / grid.scale, name=f"int8_grid{k}_in"),
                layers.ReLU(max_value=255.0, name=f"int8_grid{k}_clamp"),
                layers.Identity(dtype="int32", name=f"int8_grid{k}_step"),
                layers.Rescaling(grid.scale, lo, name=f"int8_grid{k}_value"),
            ]
        return self.grids[grid]

    def conv(self, like: Any, kernel: np.ndarray, bias: np.ndarray) -> Any:
        """``like`` (a Keras convolution) with the int8 op's weights and bias, folded BN in."""
        key = (like.name, kernel.tobytes() + bias.tobytes())
        if key not in self.convs:
            twins = sum(name == like.name for name, _ in self.convs)
            config = like.get_config()
            config.update(
                name=f"int8_{like.name}" + (f"_{twins}" if twins else ""),
                use_bias=True,
                activation=None,
                trainable=False,
            )
            for unused in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
                config.pop(unused, None)
            layer = type(like).from_config(config)
            layer.build(like.input.shape if hasattr(like, "input") else None)
            if list(layer.kernel.shape) != list(kernel.shape):
                raise NotEmulable(
                    f"{like.name}: the int8 kernel is {kernel.shape}, Keras' {layer.kernel.shape}"
                )
            layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
            self.convs[key] = layer
        return self.convs[key]

    def copy(self, layer: Any, suffix: str) -> Any:
        config = layer.get_config()
        config["name"] = f"int8_{layer.name}" + (f"_{suffix}" if suffix else "")
        return type(layer).from_config(config)


def emulate(
    source: Path | bytes, backbone: Any, views: dict[str, list[Any]], model: str
) -> Emulation:
    """The int8 base in ``source`` (the converted frozen part of ``backbone`` with the
    view layers ``views``, as :func:`mtl.model.classifier.build_parts` makes them) as
    Keras layers (raises :class:`NotEmulable`)."""
    if model not in SUPPORTED_MODELS or any(v not in SUPPORTED_VIEWS for v in views):
        raise NotEmulable(
            f"the int8 base is rebuilt in Keras for {', '.join(SUPPORTED_MODELS)} with the "
            f"views {', '.join(SUPPORTED_VIEWS)}. Received model={model!r}, views={list(views)}"
        )
    g = Graph.read(source)
    b = _Builder()
    prefix, preprocessed = _prefix(g, b)
    out = g.producer[g.output_index]
    if out["op_name"] != "DEQUANTIZE":
        raise NotEmulable(f"the base ends in {out['op_name']}, not DEQUANTIZE")
    features = int(out["inputs"][0])
    last = g.producer[features]
    joined = last["op_name"] == "CONCATENATION"
    ends = [int(i) for i in last["inputs"]] if joined else [features]
    if len(ends) != len(views):
        raise NotEmulable(f"the base has {len(ends)} views; the model {len(views)}")
    towers = {}
    for (name, view), end in zip(views.items(), ends, strict=True):
        tower = _tower(g, b, g.chain_back(end, preprocessed), view, backbone, name)
        if joined:
            tower += b.rounding(g.grid(last["outputs"][0]))
        towers[name] = tower
    return Emulation(prefix, towers)


def _view_layer(g: Graph, b: _Builder, layer: Any, op: dict[str, Any] | None) -> Any:
    """A copy of the view layer ``layer`` (``op``: the int8 op computing its values, if
    any); a mirror's Dense with that op's weights."""
    copy = b.copy(layer, "")  # a view's own layer: its name is unique already
    if op is not None and op["op_name"] == "FULLY_CONNECTED":
        kernel = g.dequantized(op["inputs"][1]).T  # LiteRT: (out, in); Keras: (in, out)
        copy.build((None, kernel.shape[0]))
        if list(copy.kernel.shape) != list(layer.kernel.shape) or int(op["inputs"][2]) >= 0:
            raise NotEmulable(f"{layer.name}: the int8 product is not the view's mirror")
        copy.set_weights([kernel.astype(np.float32)])
    return copy


def _prefix(g: Graph, b: _Builder) -> tuple[list[Any], int]:
    """QUANTIZE -> MUL -> ADD (x / 127.5 - 1): the layers and the preprocessed tensor's index.

    After QUANTIZE (scale 1) a pixel is one of 256 integers, so the preprocessing is a
    table of 256 values, read from LiteRT itself: the MUL and ADD round on their grids
    with exact ties (x * 2/3 - 1 lands half-way between steps for every other x) that
    float32 would break at random.
    """
    tensor = g.input_index
    for expected in ("QUANTIZE", "MUL", "ADD"):
        consumers = [op for op in g.ops if int(op["inputs"][0]) == tensor]
        if len(consumers) != 1 or consumers[0]["op_name"] != expected:
            found = [op["op_name"] for op in consumers] or ["nothing"]
            raise NotEmulable(f"expected {expected} after the input; found {', '.join(found)}")
        tensor = int(consumers[0]["outputs"][0])
        if expected == "QUANTIZE" and g.grid(tensor) != Grid(1.0, -128):
            raise NotEmulable("the base's input is not quantized as raw pixels 0-255")
    table = g.table(tensor)
    keras = b.keras
    return [
        # the pixel's integer (clamped, rounded half up), as in :meth:`_Builder.rounding`
        keras.layers.Rescaling(1.0, 0.5, name="int8_pixel_in"),
        keras.layers.ReLU(max_value=255.0, name="int8_pixel_clamp"),
        keras.layers.Identity(dtype="int32", name="int8_pixel"),
        keras.layers.Embedding(
            256,
            1,
            embeddings_initializer=keras.initializers.Constant(table.reshape(256, 1)),
            trainable=False,
            name="int8_preprocess",
        ),
        keras.layers.Reshape(tuple(g.tensors[tensor]["shape"][1:]), name="int8_preprocessed"),
    ], tensor


def _tower(
    g: Graph, b: _Builder, chain: list[dict[str, Any]], view: list[Any], backbone: Any, name: str
) -> list[Any]:
    """One view's layers: its crop/resize, the backbone's convolutions, the pooling."""
    keras = b.keras
    layers: list[Any] = []
    ops = list(chain)
    for layer in view:  # the view's own layers come first in the chain
        expected = VIEW_OPS.get(type(layer).__name__, ("?",))
        taken: list[dict[str, Any]] = [ops.pop(0) if ops else {"op_name": "-"} for _ in expected]
        became = tuple(str(op["op_name"]) for op in taken)
        if became != expected:
            raise NotEmulable(
                f"view {name}: {layer.name} became {', '.join(became)}, not {', '.join(expected)}"
            )
        computed = [op for op in taken if op["op_name"] in ROUNDED_VIEW_OPS]
        layers.append(_view_layer(g, b, layer, computed[0] if computed else None))
        if computed:
            layers += b.rounding(g.grid(int(computed[0]["outputs"][0])))
    convs = [op for op in ops if op["op_name"] in CONVS]
    rest = [op for op in ops if op["op_name"] not in CONVS]
    pending: Grid | None = None  # the last conv's output grid, rounded after its ReLU
    for layer in backbone.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "BatchNormalization"):  # BN is folded into the int8 conv
            continue
        if kind == "ZeroPadding2D":
            layers.append(b.copy(layer, name))
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            if not convs:
                raise NotEmulable(f"view {name}: no int8 convolution left for {layer.name}")
            if pending is not None:
                layers += b.rounding(pending)
            op = convs.pop(0)
            kernel = np.transpose(g.dequantized(op["inputs"][1]), (1, 2, 3, 0))
            bias = g.dequantized(op["inputs"][2])
            layers.append(b.conv(layer, kernel, bias))
            pending = g.grid(op["outputs"][0])
        elif kind == "ReLU":
            layers.append(b.copy(layer, name))
            if pending is not None:  # the conv's output grid, after its fused ReLU6
                layers += b.rounding(pending)
                pending = None
        else:
            raise NotEmulable(f"view {name}: cannot rebuild {kind} {layer.name!r} in int8")
    if convs:
        raise NotEmulable(f"view {name}: {len(convs)} int8 convolutions left over")
    if pending is not None:
        layers += b.rounding(pending)
    kinds = [op["op_name"] for op in rest]
    if not kinds or kinds[0] != "MEAN" or any(k not in SAME_GRID for k in kinds[1:]):
        raise NotEmulable(f"view {name}: the base ends in {', '.join(kinds) or 'nothing'}")
    layers.append(keras.layers.GlobalAveragePooling2D(name=f"int8_pool_{name}"))
    layers += b.rounding(g.grid(rest[0]["outputs"][0]))
    return layers

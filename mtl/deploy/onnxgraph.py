"""The fit of a photo inside an ONNX graph: a decoded uint8 photo of any size in front of
the converted square network, so ONNX Runtime alone, fed what a decoder gives, agrees
with ``mtl predict``.

Composed with the ``onnx`` helper API (opset 18: Resize's ``antialias``), in front of
the network tf2onnx made. The crop and resize are those of mtl's loader
(:mod:`mtl.data.images`: Pillow's antialiased bilinear resize of the central box, at
fractional pixel positions), rounded to whole 0-255 values as the loader's uint8 pixels
are: measured 0.17 of 255 from the loader's pixels on average, at most 4 (Pillow rounds
between its two passes; this does not). Nothing here imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 18  # Resize's antialias attribute
SQUARE = "mtl_square_pixels"  # the network's own input, once the photo input is in front


def prepend_fit(proto: Any, input_name: str, size: int, fit: str) -> None:
    """Make ``proto``'s float (n, size, size, 3) input ``input_name`` an internal tensor fed
    by a uint8 (n, height, width, 3) input of the same name (in place).

    Pillow's resize of a box (:func:`mtl.data.images._cover`, fractional) is reproduced
    exactly in position: output pixel ``i`` of an axis samples the photo at
    ``box_start + (i + 0.5) * step``. ONNX Runtime sizes the antialiasing filter from the
    tensor it is given, not from the ``roi``, so the photo is first cut to the box plus a
    margin of the filter's reach (where it is enlarged, its edge pixels repeated once, as
    Pillow clamps), and the ``roi`` (``tf_crop_and_resize``) places the samples inside
    that cut. On a square of the model's size it is the identity."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    (square,) = [i for i in graph.input if i.name == input_name]
    for node in graph.node:
        node.input[:] = [SQUARE if n == input_name else n for n in node.input]
    graph.input.remove(square)

    def const(name: str, value: Any, dtype: Any = np.float64) -> Any:
        return numpy_helper.from_array(np.array(value, dtype=dtype), f"mtl_fit_{name}")

    consts = [
        const("size", float(size)),
        const("half", 0.5),
        const("two", 2.0),
        const("one", 1.0),
        const("zero", 0.0),
        const("last", size - 0.5),
        const("i1", [1], np.int64),
        const("i3", [3], np.int64),
        const("sizes", [size, size], np.int64),
        const("axes", [1, 2], np.int64),
        const("i0", [0], np.int64),
    ]

    def n(op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        named = [i if i in ("", input_name) else f"mtl_fit_{i}" for i in inputs]
        return helper.make_node(op, named, [f"mtl_fit_{output}"], **attrs)

    # per axis (height, width), in float64: the box Pillow resizes and its step
    nodes = [
        helper.make_node("Shape", [input_name], ["mtl_fit_shape"]),
        n("Slice", ["shape", "i1", "i3"], "hw_int"),
        n("Cast", ["hw_int"], "hw", to=TensorProto.DOUBLE),
    ]
    if fit == "center":  # covering size (rounded as Python's round), central box
        nodes += [
            n("Div", ["size", "hw"], "ratios"),
            n("ReduceMax", ["ratios"], "scale", keepdims=1),
            n("Mul", ["hw", "scale"], "cover_exact"),
            n("Round", ["cover_exact"], "cover_round"),
            n("Max", ["cover_round", "size"], "cover"),
            n("Sub", ["cover", "size"], "spare"),
            n("Div", ["spare", "two"], "spare_half"),
            n("Floor", ["spare_half"], "offset"),
            n("Div", ["hw", "cover"], "step"),
            n("Mul", ["offset", "step"], "b0"),
        ]
    else:  # the whole photo
        nodes += [n("Div", ["hw", "size"], "step"), n("Mul", ["hw", "zero"], "b0")]
    nodes += [
        n("Mul", ["step", "size"], "box_len"),
        n("Add", ["b0", "box_len"], "b1"),
        # the cut: the box and the filter's reach (ceil(step) + 1) each side, in the photo
        n("Ceil", ["step"], "reach0"),
        n("Add", ["reach0", "one"], "reach"),
        n("Floor", ["b0"], "b0_floor"),
        n("Sub", ["b0_floor", "reach"], "a0_raw"),
        n("Max", ["a0_raw", "zero"], "a0"),
        n("Ceil", ["b1"], "b1_ceil"),
        n("Add", ["b1_ceil", "reach"], "a1_raw"),
        n("Min", ["a1_raw", "hw"], "a1"),
        n("Cast", ["a0"], "a0_int", to=TensorProto.INT64),
        n("Cast", ["a1"], "a1_int", to=TensorProto.INT64),
        helper.make_node(
            "Slice",
            [input_name, "mtl_fit_a0_int", "mtl_fit_a1_int", "mtl_fit_axes"],
            ["mtl_fit_cut"],
        ),
        # first and last samples, in the padded cut's index coordinates, over its length-1
        # edge pixels repeated once where the photo is enlarged (its first and last samples
        # lie outside the cut, and Pillow clamps there); never where it shrinks, where the
        # padding would widen Runtime's filter (on a square of the model's size: not identity)
        n("Less", ["step", "one"], "enlarged"),
        n("Cast", ["enlarged"], "pad", to=TensorProto.DOUBLE),
        n("Cast", ["enlarged"], "pad_int", to=TensorProto.INT64),
        n("Concat", ["i0", "pad_int", "i0", "i0", "pad_int", "i0"], "pads", axis=0),
        n("Sub", ["a1", "a0"], "cut_len"),
        n("Add", ["cut_len", "pad"], "cut_len_pad"),
        n("Add", ["cut_len_pad", "pad"], "cut_len_pads"),
        n("Sub", ["cut_len_pads", "one"], "span"),
        n("Mul", ["step", "half"], "first_off"),
        n("Add", ["b0", "first_off"], "first_at"),
        n("Sub", ["first_at", "half"], "first_idx"),
        n("Mul", ["step", "last"], "last_off"),
        n("Add", ["b0", "last_off"], "last_at"),
        n("Sub", ["last_at", "half"], "last_idx"),
        n("Sub", ["first_idx", "a0"], "first_cut"),
        n("Add", ["first_cut", "pad"], "first_pad"),
        n("Sub", ["last_idx", "a0"], "last_cut"),
        n("Add", ["last_cut", "pad"], "last_pad"),
        n("Div", ["first_pad", "span"], "roi_start"),
        n("Div", ["last_pad", "span"], "roi_end"),
        n("Concat", ["roi_start", "roi_end"], "roi64", axis=0),
        n("Cast", ["roi64"], "roi", to=TensorProto.FLOAT),
        n("Cast", ["cut"], "cut_float", to=TensorProto.FLOAT),
        n("Pad", ["cut_float", "pads"], "padded", mode="edge"),
        n(
            "Resize",
            ["padded", "roi", "", "sizes"],
            "resized",
            mode="linear",
            antialias=1,
            axes=[1, 2],
            coordinate_transformation_mode="tf_crop_and_resize",
        ),
        n("Round", ["resized"], "rounded"),
        helper.make_node("Clip", ["mtl_fit_rounded", "mtl_fit_low", "mtl_fit_high"], [SQUARE]),
    ]
    consts += [const("low", 0.0, np.float32), const("high", 255.0, np.float32)]
    photo = helper.make_tensor_value_info(
        input_name, TensorProto.UINT8, ["batch", "height", "width", 3]
    )
    graph.input.insert(0, photo)
    graph.initializer.extend(consts)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *old])

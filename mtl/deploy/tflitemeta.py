"""Standard TFLite Model Metadata: what MediaPipe Tasks' ImageClassifier and the TFLite
Task Library read from a ``.tflite`` to run it with no code of the user's.

The metadata is a flatbuffer of the schema ``metadata_schema.fbs`` (file identifier
``M001``) in the model's ``TFLITE_METADATA`` entry: the input is an RGB image with its
normalization options (``(x - mean) / std``) and value range, the output a feature
tensor whose class names are an associated ``TENSOR_AXIS_LABELS`` file. The labels file
is packed as those readers expect: a zip archive appended to the model's bytes.

Written with the ``flatbuffers`` builder directly (the field slots below are the
schema's), so exporting needs neither MediaPipe nor tflite-support. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

METADATA_NAME = "TFLITE_METADATA"
IDENTIFIER = b"M001"
LABELS_NAME = "labels.txt"
MIN_PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version

# Union and enum values of metadata_schema.fbs
_IMAGE_PROPERTIES, _FEATURE_PROPERTIES = 2, 1
_NORMALIZATION_OPTIONS = 1
_RGB = 1
_TENSOR_AXIS_LABELS = 2


def metadata_flatbuffer(
    *, name: str, description: str, version: str, mean: list[float], std: list[float],
    low: float, high: float, output_description: str,
) -> bytes:  # fmt: skip
    """The ``ModelMetadata`` of an image classifier with one input and one output."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def floats(values: list[float]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(v)
        return b.EndVector()

    def offsets(values: list[int]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependUOffsetTRelative(v)
        return b.EndVector()

    def table(slots: int, fields: list[tuple[str, int, Any]]) -> int:
        b.StartObject(slots)
        for kind, slot, value in fields:
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "uint8":
                b.PrependUint8Slot(slot, value, 0)
            else:
                b.PrependInt8Slot(slot, value, 0)
        return int(b.EndObject())

    # input: an RGB image, normalised inside mtl's network (mean 0, std 1), 0-255
    image_props = table(2, [("int8", 0, _RGB)])  # ImageProperties.color_space
    content_in = table(3, [("uint8", 0, _IMAGE_PROPERTIES), ("offset", 1, image_props)])
    mean_v, std_v = floats(mean), floats(std)
    norm = table(2, [("offset", 0, mean_v), ("offset", 1, std_v)])  # NormalizationOptions
    unit = table(2, [("uint8", 0, _NORMALIZATION_OPTIONS), ("offset", 1, norm)])  # ProcessUnit
    units = offsets([unit])
    max_v, min_v = floats([high]), floats([low])
    stats_in = table(2, [("offset", 0, max_v), ("offset", 1, min_v)])  # Stats
    in_name, in_desc = b.CreateString("image"), b.CreateString("RGB photo, 0-255")
    tensor_in = table(
        7,
        [("offset", 0, in_name), ("offset", 1, in_desc), ("offset", 3, content_in),
         ("offset", 4, units), ("offset", 5, stats_in)],
    )  # fmt: skip
    # output: class probabilities, names in the packed labels file
    feature = table(0, [])
    content_out = table(3, [("uint8", 0, _FEATURE_PROPERTIES), ("offset", 1, feature)])
    labels_name = b.CreateString(LABELS_NAME)
    labels_desc = b.CreateString("class names, one a line, in output order")
    labels = table(
        5,
        [("offset", 0, labels_name), ("offset", 1, labels_desc),
         ("int8", 2, _TENSOR_AXIS_LABELS)],
    )  # fmt: skip
    files = offsets([labels])
    max_o, min_o = floats([1.0]), floats([0.0])
    stats_out = table(2, [("offset", 0, max_o), ("offset", 1, min_o)])
    out_name, out_desc = b.CreateString("probabilities"), b.CreateString(output_description)
    tensor_out = table(
        7,
        [("offset", 0, out_name), ("offset", 1, out_desc), ("offset", 3, content_out),
         ("offset", 5, stats_out), ("offset", 6, files)],
    )  # fmt: skip
    inputs, outputs = offsets([tensor_in]), offsets([tensor_out])
    graph = table(10, [("offset", 2, inputs), ("offset", 3, outputs)])  # SubGraphMetadata
    graphs = offsets([graph])
    m_name, m_desc = b.CreateString(name), b.CreateString(description)
    m_version, parser = b.CreateString(version), b.CreateString(MIN_PARSER_VERSION)
    root = table(
        8,
        [("offset", 0, m_name), ("offset", 1, m_desc), ("offset", 2, m_version),
         ("offset", 3, graphs), ("offset", 7, parser)],
    )  # fmt: skip
    b.Finish(root, file_identifier=IDENTIFIER)
    return bytes(b.Output())


def pack_files(model: bytes, packed: dict[str, str]) -> bytes:
    """``model`` with ``packed`` (name -> text) appended as a zip archive, as the metadata
    readers find associated files (a .tflite is a valid zip then; the interpreter reads
    only the flatbuffer in front)."""
    buffer = io.BytesIO(model)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, text in packed.items():
            archive.writestr(name, text.encode("utf-8"))
    return buffer.getvalue()


def packed_files(model: bytes) -> dict[str, bytes]:
    """The files packed into a ``.tflite`` (empty when none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}

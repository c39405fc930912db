"""Exports that take what their users hold (issue 32): each read by its own runtime, fed
the obvious way, agrees with `mtl predict` on photos of every shape; `--force` replaces
only what mtl wrote (issue 34 B)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from tests.shapes import SHAPES, odd_shapes


@pytest.fixture(scope="module")
def shaped(trained_model, tmp_path_factory) -> dict[str, list[Path]]:
    """30 validation photos in each shape (landscape, portrait, 3:1 panorama, 48x36)."""
    picks = trained_model.val_files[::4][:30]
    return odd_shapes(picks, tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def reference(trained_model, shaped) -> dict[Path, str]:
    """`mtl predict`'s top label on model.keras for every shaped photo."""
    from mtl.inference.predict import open_model, predict_paths

    predictor = open_model(trained_model.path)
    every = [p for paths in shaped.values() for p in paths]
    results, _ = predict_paths(predictor, every)
    assert all(r.ok for r in results)
    return {Path(r.file): r.predictions[0].label for r in results}


@pytest.fixture(scope="module")
def exports(trained_model, tmp_path_factory) -> dict[str, Path]:
    from mtl.deploy.export import export_model

    folder = tmp_path_factory.mktemp("deploy")
    return {
        fmt: export_model(trained_model.path, fmt=fmt, out=folder / name).files[0].path
        for fmt, name in (("onnx", "m.onnx"), ("saved_model", "served"), ("tflite", "m.tflite"))
    }


def _agreement(label_of, shaped, reference) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {
        shape: float(np.mean([label_of(p) == reference[p] for p in shaped[shape]]))
        for shape in SHAPES
    }


def test_onnx_takes_any_photo_and_agrees_with_predict(exports, shaped, reference):
    """onnxruntime alone, the decoded photo as it is: no resize, no crop, no scaling."""
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(exports["onnx"]), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name) == ("image", "tensor(uint8)", "probabilities")
    assert inp.shape[1:] == ["height", "width", 3]
    meta = session.get_modelmeta().custom_metadata_map
    names = json.loads(meta["mtl.class_names"])
    facts = json.loads(meta["mtl.facts"])
    assert facts["class_names"] == names == ["ants", "bees"] and facts["fit"] == "center"
    assert len(facts["model_sha256"]) == 64

    def label(photo: Path) -> str:
        pixels = np.asarray(Image.open(photo).convert("RGB"))[None]
        return names[int(session.run(["probabilities"], {"image": pixels})[0][0].argmax())]

    agree = _agreement(label, shaped, reference)
    assert min(agree.values()) >= 0.96 and np.mean(list(agree.values())) >= 0.99, agree


def test_saved_model_serving_default_takes_encoded_images(exports, shaped, reference, tmp_path):
    """TF Serving's way: serving_default with a batch of encoded images (the REST API's
    {"b64": ...}), probabilities and the class name out."""
    import tensorflow as tf
    from PIL import Image

    folder = exports["saved_model"]
    assert sorted(p.name for p in folder.iterdir()) == ["1"]  # TF Serving's layout
    loaded = tf.saved_model.load(str(folder / "1"))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image_bytes"]
    assert sorted(serve.structured_outputs) == ["label", "probabilities"]

    def label(photo: Path) -> str:
        return serve(image_bytes=tf.constant([photo.read_bytes()]))["label"].numpy()[0].decode()

    agree = _agreement(label, shaped, reference)
    assert min(agree.values()) >= 0.96 and np.mean(list(agree.values())) >= 0.99, agree

    # one photo in every format TF Serving users send, in one batch: the same answer
    photo = shaped["landscape"][0]
    img = Image.open(photo).convert("RGB")
    encoded = []
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF"):
        buffer = io.BytesIO()
        img.save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        encoded.append(buffer.getvalue())
    out = serve(image_bytes=tf.constant(encoded))
    labels = [b.decode() for b in out["label"].numpy()]
    assert labels[:4] == [reference[photo]] * 4, labels  # GIF: a 256-colour palette
    assert out["probabilities"].shape == (5, 2)
    # the second signature: decoded uint8 pixels of any size
    pixels = np.asarray(img)[None]
    by_pixels = loaded.signatures["pixels"](image=tf.constant(pixels))
    assert by_pixels["label"].numpy()[0].decode() == reference[photo]


def test_tflite_has_standard_metadata_and_a_packed_labels_file(exports, shaped, reference):
    """The metadata MediaPipe Tasks and the Task Library read, checked with the schema's
    own reader; the labels packed; LiteRT fed the photo as it is (any height and width,
    the fit inside) and resized to the declared input."""
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    data = exports["tflite"].read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as packed:
        assert packed.read("labels.txt") == b"ants\nbees\n"
    interpreter = Interpreter(model_path=str(exports["tflite"]))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    # declared as MediaPipe resizes to; height and width dynamic: any photo as it is
    assert list(inp["shape"]) == [1, 224, 224, 3]
    assert list(inp["shape_signature"]) == [1, -1, -1, 3]

    def label(photo: Path, as_is: bool) -> str:
        img = Image.open(photo).convert("RGB")
        if not as_is:
            img = img.resize((224, 224), Image.Resampling.BILINEAR)
        interpreter.resize_tensor_input(inp["index"], [1, img.height, img.width, 3])
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], np.asarray(img, np.float32)[None])
        interpreter.invoke()
        return ["ants", "bees"][int(interpreter.get_tensor(out["index"])[0].argmax())]

    agree = _agreement(lambda p: label(p, True), shaped, reference)
    assert min(agree.values()) >= 0.96 and np.mean(list(agree.values())) >= 0.99, agree
    # resized to the declared input, a photo loses its aspect: a panorama is squashed
    agree = _agreement(lambda p: label(p, False), shaped, reference)
    assert agree["landscape"] >= 0.9 and np.mean(list(agree.values())) >= 0.8, agree

    schema = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")
    from mtl.litert import read_metadata

    raw = read_metadata(data, "TFLITE_METADATA")
    assert raw is not None
    meta = schema.ModelMetadataT.InitFromPackedBuf(bytearray(raw), 0)
    (graph,) = meta.subgraphMetadata
    (tin,), (tout,) = graph.inputTensorMetadata, graph.outputTensorMetadata
    assert tin.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert tin.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    (unit,) = tin.processUnits
    assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] and list(unit.options.std) == [1.0]
    (labels,) = tout.associatedFiles
    assert labels.name.decode() == "labels.txt"
    assert labels.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS


def test_mediapipe_image_classifier_runs_the_tflite(exports, shaped, reference):
    """A real reader of the standard metadata: MediaPipe Tasks' ImageClassifier, with no
    code of ours (it resizes the photo to the declared input itself)."""
    pytest.importorskip("mediapipe")
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(exports["tflite"])), max_results=2
    )
    with vision.ImageClassifier.create_from_options(options) as classifier:

        def label(photo: Path) -> str:
            result = classifier.classify(mp.Image.create_from_file(str(photo)))
            return str(result.classifications[0].categories[0].category_name)

        agree = _agreement(label, shaped, reference)
    assert agree["landscape"] >= 0.9 and np.mean(list(agree.values())) >= 0.8, agree


def test_int8_tflite_declares_the_square_it_runs(trained_model, tmp_path):
    """int8 keeps the square input (full-integer kernels cannot hold the resize's weights),
    and says so: its signature is -1 for the batch only."""
    from ai_edge_litert.interpreter import Interpreter

    from mtl.deploy.export import export_model

    out = tmp_path / "m.int8.tflite"
    export_model(trained_model.path, quantize="int8", representative=trained_model.train_dir,
                 calibration_count=8, out=out)  # fmt: skip
    interpreter = Interpreter(model_path=str(out))
    (inp,) = interpreter.get_input_details()
    assert list(inp["shape"]) == [1, 224, 224, 3]
    assert list(inp["shape_signature"]) == [-1, 224, 224, 3]
    with zipfile.ZipFile(out) as packed:
        assert packed.read("labels.txt") == b"ants\nbees\n"


def test_mtl_predict_reads_the_new_exports(cli, exports, trained_model):
    """`mtl predict` on the any-size ONNX and TFLite gives model.keras' probabilities."""
    files = [str(f) for f in trained_model.val_files[:4]]
    for key in ("onnx", "tflite"):
        result = cli.invoke(app, ["predict", str(exports[key]), *files, "--json", "-k", "2"])
        assert result.exit_code == 0, result.stderr
        rows = trained_model.val_probabilities[:4]
        for d, row in zip(json.loads(result.stdout), rows, strict=True):
            for p in d["predictions"]:
                got = row[trained_model.class_names.index(p["label"])]
                assert abs(p["probability"] - got) < 1e-4, (key, d)


def test_saved_model_reader_of_the_table(exports, trained_model):
    """The formats table's reader: TensorFlow's own loader, on the pixels signature."""
    from mtl.data.images import load_image
    from mtl.deploy.export import read_export

    model = read_export(exports["saved_model"], "saved_model")
    assert model.class_names == ["ants", "bees"] and model.fit == "center"
    pixels = np.stack([load_image(f, 224, "center") for f in trained_model.val_files[:4]])
    np.testing.assert_allclose(model(pixels), trained_model.val_probabilities[:4], atol=1e-4)


# --- issue 34 B: --force replaces only what mtl itself wrote ------------------------------


def test_force_never_destroys_what_is_not_an_export(cli, trained_model, exports, tmp_path):
    model = trained_model.path
    before = model.read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(before)
    (run / "notes.txt").write_text("mine")
    mine = tmp_path / "mine.tflite"
    mine.write_bytes(b"not from mtl")
    link = tmp_path / "link.onnx"
    link.symlink_to(exports["onnx"])
    cases = [
        # the run folder itself, as a SavedModel target: refused, not removed
        ([str(run / "model.keras"), "-f", "saved_model", "-o", str(run), "--force"], "model"),
        # the source model as the output file
        ([str(model), "-f", "onnx", "-o", str(model), "--force"], "model being exported"),
        # a folder holding something else
        ([str(model), "-f", "saved_model", "-o", str(tmp_path), "--force"], "only an earlier"),
        # a file mtl did not write
        ([str(model), "-o", str(mine), "--force"], "not written by mtl export"),
        # a link: never written through
        ([str(model), "-f", "onnx", "-o", str(link), "--force"], "symbolic link"),
    ]
    for args, expected in cases:
        result = cli.invoke(app, ["export", *args])
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert model.read_bytes() == before
    assert (run / "notes.txt").read_text() == "mine" and (run / "model.keras").is_file()
    assert mine.read_bytes() == b"not from mtl" and link.is_symlink()

    # an earlier export of mtl's is replaced with --force, file and folder alike
    folder = tmp_path / "served"
    for fmt, out in (("onnx", tmp_path / "again.onnx"), ("saved_model", folder)):
        for _ in range(2):
            args = ["export", str(model), "-f", fmt, "-o", str(out), "--force"]
            result = cli.invoke(app, args)
            assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["1"]

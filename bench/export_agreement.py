"""Each export fed the obvious way, with nothing but its own runtime, against `mtl predict`.

    python bench/export_agreement.py --count 60
    python bench/export_agreement.py --model runs/x/model.keras --data photos/ --count 100

Photos of every shape (tests/shapes.py: landscape, portrait, 3:1 panorama and 48x36
thumbnail, made from real photos) go through `mtl predict` on model.keras (the
reference) and through each export as its users feed it:

- ONNX: ``onnxruntime`` alone, the decoded photo as it is (uint8, any size);
- SavedModel: ``tf.saved_model.load(...).signatures["serving_default"]`` with the
  file's bytes, as TF Serving's REST API feeds it;
- TFLite (float, dynamic-range): LiteRT, the photo as it is (its height and width are
  dynamic), and resized (bilinear) to the declared input;
- MediaPipe Tasks' ImageClassifier on the float .tflite, when mediapipe is installed.

Prints the share of photos whose top label agrees with `mtl predict`, by shape, and
each reader's time a photo (decoding included, one photo at a time). Without
--model it trains the test model (a head on half of hymenoptera, as tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run the checkout's mtl, and reach tests/

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED = ROOT.parent / "shared"
if (SHARED / "weights").is_dir():
    os.environ.setdefault("MTL_WEIGHTS_DIR", str(SHARED / "weights"))


def onnx_labels(path: Path) -> Callable[[Path], str]:
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = json.loads(session.get_modelmeta().custom_metadata_map["mtl.class_names"])

    def label(photo: Path) -> str:
        pixels = np.asarray(Image.open(photo).convert("RGB"))[None]
        (probs,) = session.run(["probabilities"], {"image": pixels})
        return str(names[int(probs[0].argmax())])

    return label


def saved_model_labels(path: Path) -> Callable[[Path], str]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path / "1")).signatures["serving_default"]

    def label(photo: Path) -> str:
        out = serve(image_bytes=tf.constant([photo.read_bytes()]))
        return out["label"].numpy()[0].decode()

    return label


def tflite_labels(path: Path, as_is: bool = False) -> Callable[[Path], str]:
    import io
    import zipfile

    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    _, height, width, _ = inp["shape"]
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as packed:  # the packed labels
        names = packed.read("labels.txt").decode().split()

    def label(photo: Path) -> str:
        img = Image.open(photo).convert("RGB")
        if as_is:  # height and width are dynamic (shape signature -1): the photo as it is
            interpreter.resize_tensor_input(inp["index"], [1, img.height, img.width, 3])
            interpreter.allocate_tensors()
        else:
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        interpreter.set_tensor(inp["index"], np.asarray(img, np.float32)[None])
        interpreter.invoke()
        return names[int(interpreter.get_tensor(out["index"])[0].argmax())]

    return label


CLOSE: list[Callable[[], None]] = []


def mediapipe_labels(path: Path) -> Callable[[Path], str] | None:
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        return None
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=1
    )
    classifier = vision.ImageClassifier.create_from_options(options)
    CLOSE.append(classifier.close)

    def label(photo: Path) -> str:
        result = classifier.classify(mp.Image.create_from_file(str(photo)))
        return str(result.classifications[0].categories[0].category_name)

    return label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a model.keras (default: train the test one)")
    parser.add_argument("--data", type=Path, nargs="+", default=None, help="photo folders")
    parser.add_argument("--count", type=int, default=50, help="source photos (4 shapes each)")
    args = parser.parse_args()

    from mtl.data.images import list_images
    from mtl.deploy.export import export_model
    from mtl.inference.predict import open_model, predict_paths
    from tests.shapes import SHAPES, odd_shapes

    work = Path(tempfile.mkdtemp(prefix="export_agreement."))
    model = args.model
    if model is None:
        from tests.trained_model import make_trained_model

        model = make_trained_model(SHARED / "data" / "hymenoptera" / "train", work / "run").path
    folders = args.data or [SHARED / "data" / "hymenoptera" / "train", SHARED / "data" / "clothing"]
    found = sorted(p for folder in folders for p in list_images(folder))
    picks = np.linspace(0, len(found) - 1, min(args.count, len(found))).round().astype(int)
    photos = odd_shapes([found[i] for i in picks], work / "photos")

    exports = {
        "onnx": export_model(model, fmt="onnx", out=work / "m.onnx").files[0].path,
        "saved_model": export_model(model, fmt="saved_model", out=work / "m_sm").files[0].path,
        "tflite": export_model(model, fmt="tflite", out=work / "m.tflite").files[0].path,
        "dynamic": export_model(
            model, fmt="tflite", quantize="dynamic", out=work / "m.dynamic.tflite"
        )
        .files[0]
        .path,
    }
    readers: dict[str, Callable[[Path], str] | None] = {
        "onnx (onnxruntime, photo as is)": onnx_labels(exports["onnx"]),
        "saved_model (serving_default, bytes)": saved_model_labels(exports["saved_model"]),
        "tflite float (LiteRT, photo as is)": tflite_labels(exports["tflite"], as_is=True),
        "tflite float (LiteRT, resized to input)": tflite_labels(exports["tflite"]),
        "tflite dynamic (LiteRT, photo as is)": tflite_labels(exports["dynamic"], as_is=True),
        "tflite float (MediaPipe ImageClassifier)": mediapipe_labels(exports["tflite"]),
    }
    predictor = open_model(model)
    import time

    print(f"{'reader':44} " + " ".join(f"{s:>10}" for s in SHAPES) + f" {'all':>7}  ms/photo")
    for name, reader in readers.items():
        if reader is None:
            print(f"{name:44} (not installed)")
            continue
        row, agree_all, n_all, spent = [], 0, 0, 0.0
        for shape in SHAPES:
            results, _ = predict_paths(predictor, photos[shape])
            reference = {Path(r.file): r.predictions[0].label for r in results if r.ok}
            start = time.perf_counter()
            labels = {p: reader(p) for p in photos[shape] if p in reference}
            spent += time.perf_counter() - start
            agree = sum(labels[p] == reference[p] for p in labels)
            row.append(f"{agree / len(reference):10.3f}")
            agree_all, n_all = agree_all + agree, n_all + len(reference)
        ms = 1000 * spent / n_all  # decoding included, one photo at a time
        print(f"{name:44} " + " ".join(row) + f" {agree_all / n_all:7.3f}  {ms:8.1f}  (n={n_all})")
    for close in CLOSE:
        close()


if __name__ == "__main__":
    main()

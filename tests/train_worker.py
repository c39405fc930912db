"""Run by tests/test_train_backends.py in a subprocess: train tiny, reload, predict, print JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mtl import runtime
from mtl.data.images import load_image
from mtl.model.modelio import load_model
from mtl.pipeline.config import resolve
from mtl.training.trainer import train


def main() -> None:
    data, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # 0.75: the fast option, run here on every backend (the default 1.0 runs everywhere else).
    options = {"alpha": 0.75, "epochs": epochs, "patience": 0, "batch_size": 4, "head": "8",
               "refit": False}  # fmt: skip
    result = train(data, resolve(None, options), out=out)
    loaded = load_model(result.model_path)
    files = sorted(Path(data).rglob("*.jpg"))[:2]
    x = np.stack([load_image(f, loaded.image_size) for f in files]).astype("float32")
    probs = runtime.as_numpy(loaded.model.predict_on_batch(x))
    report = {
        "backend": runtime.backend_name(),
        "device": result.device,
        "classes": loaded.class_names,
        "probs": np.asarray(probs).tolist(),
        "epochs": len(result.history),
    }
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()

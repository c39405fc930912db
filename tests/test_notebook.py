"""The Python API as a Jupyter user meets it: a real notebook run headless in a real
kernel (nbclient + ipykernel), its saved outputs checked.

It trains a small model on 20 real photos, shows the result, predicts a PIL image and
an array, and classifies an array with the real ImageNet weights (which imports
TensorFlow: its start-up lines must not reach the notebook).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import ALPHA, HYMENOPTERA

pytestmark = pytest.mark.slow

PHOTO = HYMENOPTERA / "ants" / "0013035.jpg"


def _cells(data: str, out: str) -> list[str]:
    return [
        "import mtl, numpy as np\nfrom PIL import Image\n"
        f"DATA, OUT, PHOTO = {data!r}, {out!r}, {str(PHOTO)!r}",
        f"run = mtl.train(DATA, alpha={ALPHA}, epochs=3, out=OUT, seed=1)\nrun",
        "img = Image.open(PHOTO)\nreport = mtl.predict(run.run_dir, img, top_k=2)\nreport",
        "both = mtl.predict(run.run_dir, [np.asarray(img), PHOTO])\n"
        "print(repr(run)); print(repr(report)); print(json.dumps(both.to_json()))",
        f"top = mtl.classify(np.asarray(img.convert('RGB')), alpha={ALPHA}, top_k=3)\ntop",
        "mtl.evaluate(run.run_dir, split='val')",
    ]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    import nbclient
    import nbformat

    data = tmp_path_factory.mktemp("nb_data")
    for cls in ("ants", "bees"):
        (data / cls).mkdir()
        for f in sorted((HYMENOPTERA / cls).iterdir())[:10]:
            shutil.copy(f, data / cls / f.name)
    out = tmp_path_factory.mktemp("nb_runs") / "run"
    cells = _cells(str(data), str(out))
    cells[0] = "import json\n" + cells[0]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=None, resources={"metadata": {"path": str(data)}}
    )
    client.execute()
    return nb.cells


def _outputs(cell, kind: str):
    return [o for o in cell.outputs if o.output_type == kind]


def test_no_native_noise_on_stderr(executed):
    """Neither TensorFlow's start-up lines nor LiteRT's XNNPACK note reach the notebook."""
    for cell in executed:
        for o in _outputs(cell, "stream"):
            assert o.name != "stderr", (cell.source, o.text)
        assert not _outputs(cell, "error")


def test_train_shows_progress_and_an_html_table(executed):
    cell = executed[1]
    progress = [o for o in _outputs(cell, "display_data") if "text/html" in o.data]
    assert progress, "no progress display"
    html = progress[-1].data["text/html"]
    assert "<progress" in html and "epoch   3/3" in html  # the bar and the epoch lines
    assert "refit (all photos)" in html
    result = _outputs(cell, "execute_result")[0].data
    assert "<table" in result["text/html"] and "mtl train:" in result["text/html"]
    assert "<td>ants</td>" in result["text/html"]
    assert result["text/plain"].startswith("TrainResult(") and len(result["text/plain"]) < 400


def test_predict_a_pil_image(executed):
    result = _outputs(executed[2], "execute_result")[0].data
    assert "<table" in result["text/html"] and "&lt;image 0&gt;" in result["text/html"]
    assert result["text/plain"].startswith("PredictReport(model.keras (keras")
    assert ", 1 image(s)" in result["text/plain"]
    printed = _outputs(executed[3], "stream")[0].text.splitlines()
    assert len(printed[0]) < 400 and printed[0].startswith("TrainResult(")
    both = json.loads(printed[2])
    assert [r["file"] for r in both] == ["<image 0>", str(PHOTO)]
    # The same photo in memory and from its file: the same answer. Not the same digits: a
    # JPEG file is decoded at a reduced DCT scale (faster), an image in memory is whole.
    (mem,), (disk,) = both[0]["predictions"], both[1]["predictions"]
    assert mem["label"] == disk["label"] == "ants"
    assert mem["probability"] == pytest.approx(disk["probability"], abs=0.01)


def test_classify_an_array_and_evaluate(executed):
    top = _outputs(executed[4], "execute_result")[0].data
    assert top["text/plain"].startswith("ImageResults(1 image(s): <image 0> ")
    assert top["text/html"].count("<tr>") >= 3  # header + 3 ranks
    report = _outputs(executed[5], "execute_result")[0].data
    assert report["text/plain"].startswith("EvaluationReport(") and len(report["text/plain"]) < 400
    assert "precision" in report["text/html"]


def test_an_image_in_memory_gets_the_files_pixels(sample_photos):
    """A PNG (no reduced-scale decode) gives the same pixels from its file and in memory,
    as a PIL image or as an array, for both fits."""
    import numpy as np
    from PIL import Image

    from mtl.data.images import load_image, load_in_memory

    path = sample_photos["coffee"]
    for fit in ("center", "squash"):
        from_file = load_image(path, 224, fit)
        with Image.open(path) as img:
            assert np.array_equal(load_in_memory(img, 224, fit), from_file)
            assert np.array_equal(load_in_memory(np.asarray(img), 224, fit), from_file)


@pytest.mark.parametrize(
    ("array", "why"),
    [
        ("float", "an array image must be uint8 (0-255), not float32"),
        ("two_channels", "an array image must be height x width x 3 (RGB), not 8x8x2"),
        ("empty", "an empty array image"),
    ],
)
def test_an_unusable_array_is_a_one_line_error(array, why):
    import numpy as np

    from mtl.data.images import load_in_memory
    from mtl.errors import ImageError

    arrays = {
        "float": np.zeros((8, 8, 3), np.float32),
        "two_channels": np.zeros((8, 8, 2), np.uint8),
        "empty": np.zeros((0, 8, 3), np.uint8),
    }
    with pytest.raises(ImageError, match="^" + why.replace("(", r"\(").replace(")", r"\)")):
        load_in_memory(arrays[array], 224)


def test_an_input_of_another_type_is_a_usage_error():
    from mtl.data.images import expand_inputs
    from mtl.errors import UsageError

    with pytest.raises(UsageError, match="input 1 is a int: give file or folder paths"):
        expand_inputs(["a.jpg", 3])

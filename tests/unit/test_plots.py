"""mtl.report.plots alone: the two PNGs as pixels (the lines and cells where they belong),
the odd inputs that must not break a run's last step, and no plotting library imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from mtl.errors import UsageError
from mtl.report import plots

NAN = float("nan")


def _history() -> list[dict[str, object]]:
    """10 epochs of a fit (the last 4 fine-tuning, one without validation), then a
    6-epoch refit: every kind of line and both markers."""
    rows: list[dict[str, object]] = []
    for e in range(1, 11):
        rows.append(
            {
                "phase": "fine_tune" if e > 6 else "train",
                "epoch": e,
                "loss": 1.0 / e,
                "accuracy": 1 - 0.5 / e,
                "val_loss": NAN if e == 8 else 1.3 / e + 0.1,
                "val_accuracy": NAN if e == 8 else 0.9 - 0.5 / e,
            }
        )
    for e in range(1, 7):
        rows.append({"phase": "refit", "epoch": e, "loss": 0.8 / e, "accuracy": 1 - 0.4 / e})
    return rows


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB")).astype(int)


def _near(px: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    """A mask of the pixels within ``tol`` (per channel) of ``colour``."""
    return (np.abs(px - np.array(colour)) <= tol).all(axis=-1)


def test_learning_curves_draw_every_line(tmp_path):
    out = plots.learning_curves(_history(), tmp_path / "curves.png", kept_epoch=5)
    assert out == tmp_path / "curves.png"
    px = _pixels(out)
    assert px.shape == (440, 1100, 3)
    half = px.shape[1] // 2
    for colour in plots.COLOURS.values():  # train, val and refit: in both panels
        for panel in (px[:, :half], px[:, half:]):
            assert _near(panel, colour).sum() > 300, colour
    # The two vertical markers: kept epoch (green, dotted) and the fine-tuning start (grey).
    assert _near(px, plots.KEPT, 60).sum() > 100
    assert _near(px, plots.FINE_TUNE, 30).sum() > 100
    # A white background with dark text (titles, ticks, legend).
    assert (px == 255).all(axis=-1).mean() > 0.6
    assert (px.sum(axis=-1) < 150).sum() > 500


def test_learning_curves_lines_are_where_the_values_are(tmp_path):
    """The train loss falls: its colour sits high on the left of the loss panel and low
    on its right."""
    history = [
        {"phase": "train", "epoch": e, "loss": 1.0 - 0.1 * e, "accuracy": 0.5} for e in range(10)
    ]
    px = _pixels(plots.learning_curves(history, tmp_path / "c.png"))
    ys, xs = np.nonzero(_near(px[:, :550], plots.COLOURS["train"]))
    left, right = ys[xs < xs.min() + 40], ys[xs > xs.max() - 40]
    assert left.mean() < right.mean() - 200  # rows count down: falling loss, rising row


@pytest.mark.parametrize(
    "history",
    [
        [],  # nothing trained yet: empty axes
        [{"phase": "train", "epoch": 1, "loss": 0.5, "accuracy": 0.75, "val_loss": 0.6}],
        [{"phase": "train", "epoch": e, "loss": 0.0, "accuracy": 1.0} for e in range(1, 6)],
        [  # a loss over 12 orders of magnitude, an infinite and a missing value
            {"phase": "train", "epoch": e, "loss": 10.0 ** (8 - e), "accuracy": None}
            for e in range(1, 13)
        ]
        + [{"phase": "train", "epoch": 13, "loss": float("inf"), "val_loss": NAN}],
        [{"phase": "fine_tune", "epoch": 3, "loss": 0.1}],  # only a fine-tuning epoch
    ],
    ids=["empty", "one-epoch", "constant", "huge-range", "fine-tune-only"],
)
def test_learning_curves_odd_histories(tmp_path, history):
    out = plots.learning_curves(history, tmp_path / "c.png", kept_epoch=1)
    assert _pixels(out).shape == (440, 1100, 3)


def test_learning_curves_many_epochs(tmp_path):
    history = [
        {"phase": "train", "epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / e} for e in range(1, 501)
    ]
    px = _pixels(plots.learning_curves(history, tmp_path / "c.png", kept_epoch=400))
    assert _near(px, plots.COLOURS["train"]).sum() > 300


def _heat_cells(px: np.ndarray, k: int) -> np.ndarray:
    """The colour of every cell of a k x k heat map, sampled a quarter of a cell in from
    its top-left corner (the count is written at the centre). The heat map is the
    bounding box of the bluish pixels: every Blues colour has more blue than red."""
    ys, xs = np.nonzero(px[..., 2] - px[..., 0] > 5)
    top, left = ys.min(), xs.min()
    cell = (ys.max() + 1 - top) / k
    assert abs((xs.max() + 1 - left) / k - cell) < 1  # square cells
    at = (np.arange(k) + 0.25) * cell
    return px[(top + at).astype(int)][:, (left + at).astype(int)]


def _cell_has(px: np.ndarray, k: int, i: int, j: int, colour: tuple[int, int, int]) -> bool:
    """Whether the middle of cell (i, j) holds ``colour`` (the count's text)."""
    ys, xs = np.nonzero(px[..., 2] - px[..., 0] > 5)
    cell = (ys.max() + 1 - ys.min()) / k
    y, x = ys.min() + (i + 0.5) * cell, xs.min() + (j + 0.5) * cell
    r = int(cell * 0.2)
    middle = px[int(y) - r : int(y) + r, int(x) - r : int(x) + r]
    return bool(_near(middle, colour, 30).any())


def test_confusion_matrix_two_classes(tmp_path):
    cm = [[5, 0], [1, 20]]
    out = plots.confusion_matrix(cm, ["ants", "bees"], tmp_path / "cm.png", title="val: 92%")
    px = _pixels(out)
    assert px.shape == (572, 572, 3)  # (4 + 0.6 k) * 110 pixels a side, as before
    cells = _heat_cells(px, 2)
    brightness = cells.sum(axis=-1)
    assert np.unravel_index(brightness.argmin(), (2, 2)) == (1, 1)  # the 20: darkest
    assert brightness[0, 1] > brightness[1, 0] > brightness[1, 1]  # 0, then 1, then 20
    assert tuple(cells[1, 1]) == plots.BLUES[-1]  # the maximum: the map's darkest blue
    assert tuple(cells[0, 1]) == plots.BLUES[0]  # a zero: its lightest
    assert _cell_has(px, 2, 1, 1, (255, 255, 255))  # white count on the dark cell
    assert _cell_has(px, 2, 0, 1, (0, 0, 0))  # black on the light one


def test_confusion_matrix_thirty_classes(tmp_path):
    k = 30
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, (k, k))
    cm[np.arange(k), np.arange(k)] = 40
    cm[7, 19] = 90  # the maximum, off the diagonal
    names = [f"class number {i}" for i in range(k)]
    px = _pixels(plots.confusion_matrix(cm.tolist(), names, tmp_path / "cm.png", title="30"))
    assert px.shape == (2200, 2200, 3)  # the side's cap
    brightness = _heat_cells(px, k).sum(axis=-1)
    assert np.unravel_index(brightness.argmin(), (k, k)) == (7, 19)
    zero = tuple(np.argwhere(cm == 0)[0])
    assert brightness[zero] == brightness.max()
    assert _cell_has(px, k, 7, 19, (255, 255, 255))
    assert _cell_has(px, k, *zero, (0, 0, 0))


@pytest.mark.parametrize("k", [0, 1, 100, 150])
def test_confusion_matrix_any_size(tmp_path, k):
    """No classes, one, and more than cells can name (the counts stop above 30 classes,
    the names when the cells get too small for them)."""
    cm = [[int(i == j) * 3 for j in range(k)] for i in range(k)]
    out = plots.confusion_matrix(cm, [f"c{i}" for i in range(k)], tmp_path / "cm.png", title="t")
    assert _pixels(out).shape[:2] == (round(min(4 + 0.6 * k, 20) * 110),) * 2


def test_confusion_matrix_odd_names(tmp_path):
    names = [
        "ünïcödé Ωμέγα кот 猫 🐱 עברית",
        "x" * 500,  # cut with an ellipsis
        "line\nbreak\ttab\x00nul",
        "lone \ud800 surrogate",
        "",
        "e\u0301\u200d\u202e reversed",
    ]
    k = len(names)
    cm = [[(i + j) % 4 for j in range(k)] for i in range(k)]
    title = "🐱 über " + "a very long title " * 30
    px = _pixels(plots.confusion_matrix(cm, names, tmp_path / "cm.png", title=title))
    side = round((4 + 0.6 * k) * 110)
    assert px.shape[:2] == (side, side)
    # The 500-character name is cut: the heat map keeps over half of the width.
    xs = np.nonzero(px[..., 2] - px[..., 0] > 5)[1]
    assert xs.max() - xs.min() > 0.5 * side


def test_float_counts_and_long_numbers(tmp_path):
    cm = [[123456, 0.5], [7, 99999]]
    plots.confusion_matrix(cm, ["a", "b"], tmp_path / "cm.png", title="t")


def test_force_false_refuses_an_existing_file(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"keep")
    with pytest.raises(UsageError, match="already exists"):
        plots.learning_curves(_history(), path, force=False)
    with pytest.raises(UsageError, match="already exists"):
        plots.confusion_matrix([[1]], ["a"], path, title="t", force=False)
    assert path.read_bytes() == b"keep"
    plots.confusion_matrix([[1]], ["a"], path, title="t")  # force=True, the default
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp file left


def test_no_plotting_library_is_imported(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    code = textwrap.dedent(
        f"""
        import sys
        from mtl.report import plots
        plots.learning_curves([{{"phase": "train", "epoch": 1, "loss": 1.0}}], {str(a)!r})
        plots.confusion_matrix([[1, 0], [0, 1]], ["a", "b"], {str(b)!r}, title="t")
        heavy = ("matplotlib", "tensorflow", "keras")
        print("LOADED", sorted(m for m in heavy if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "LOADED []" in done.stdout, done.stdout + done.stderr
    assert a.read_bytes()[:4] == b.read_bytes()[:4] == b"\x89PNG"

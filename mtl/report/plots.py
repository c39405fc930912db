"""PNG plots of a run and of an evaluation, drawn with Pillow (no display, no plotting
library: two simple charts are not worth matplotlib's 0.45 s import and 0.2 s render).

One confusion-matrix renderer serves ``mtl train`` (validation split) and
``mtl evaluate`` (a test folder); only the title differs.

The learning curves are drawn at twice their size and halved (``Image.reduce``: a 2x2
box average), which anti-aliases the slanted lines and the markers; the confusion matrix
is all upright rectangles and FreeType's anti-aliased text, drawn at its own size.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from mtl import files

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
AXIS: RGB = (64, 64, 64)
GRID: RGB = (230, 230, 230)
# matplotlib's tab10 blue and orange for train and val (what these plots showed before),
# purple for the refit: apart from the green of the kept-epoch line.
COLOURS: dict[str, RGB] = {
    "train": (31, 119, 180),
    "val": (255, 127, 14),
    "refit": (148, 103, 189),
}
FINE_TUNE: RGB = (128, 128, 128)
KEPT: RGB = (0, 128, 0)
# ColorBrewer's 9-class Blues (matplotlib's "Blues" colour map): 0 -> white-ish, max -> navy.
BLUES: tuple[RGB, ...] = (
    (247, 251, 255),
    (222, 235, 247),
    (198, 219, 239),
    (158, 202, 225),
    (107, 174, 214),
    (66, 146, 198),
    (33, 113, 181),
    (8, 81, 156),
    (8, 48, 107),
)
MAX_CELL_COUNTS = 30  # the count is written in every cell up to this many classes
LABEL_CHARS = 40  # class names are cut (with an ellipsis) past this many characters


@lru_cache(maxsize=1)
def _font_path() -> str | None:
    """DejaVu Sans where the system has it (most Linux systems; matplotlib's font: Latin
    with accents, Greek, Cyrillic, Hebrew, Arabic), else None."""
    try:
        return str(ImageFont.truetype("DejaVuSans.ttf", 12).path)
    except OSError:
        return None


@lru_cache(maxsize=64)
def _font(size: int) -> Font:
    """DejaVu Sans at ``size`` pixels, or Pillow's built-in scalable font (Aileron: fewer
    glyphs; a missing one draws as a box)."""
    path = _font_path()
    if path is not None:
        try:
            return ImageFont.truetype(path, max(1, size))
        except OSError:
            pass
    return ImageFont.load_default(size=max(1, size))


def _clean(text: object) -> str:
    """``text`` as one drawable line: control characters (newlines, tabs) become spaces and
    unpaired surrogates "?" (the font lacks many glyphs: those draw as boxes, not errors)."""
    s = str(text).encode("utf-8", "replace").decode("utf-8")
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in s)


def _width(font: Font, text: str) -> float:
    try:
        return float(font.getlength(text))
    except Exception:  # a string the layout engine refuses: measured as its ASCII form
        return float(font.getlength(ascii(text)))


def _fit(font: Font, text: str, width: float) -> str:
    """``text`` cut with an ellipsis to at most ``width`` pixels (and LABEL_CHARS)."""
    if len(text) > LABEL_CHARS:
        text = text[: LABEL_CHARS - 1].rstrip() + "…"
    if _width(font, text) <= width:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits with its ellipsis
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _width(font, text[:mid].rstrip() + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…" if lo else ""


def _text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: Font,
    fill: RGB | int,
    *,
    ha: str = "left",
    va: str = "middle",
) -> None:
    """``text`` placed by its left/center/right edge and top/middle/bottom (the font's
    ascent-to-descent box, so a row of labels shares one baseline)."""
    if not text:
        return
    x, y = xy
    w = _width(font, text)
    x -= w / 2 if ha == "center" else w if ha == "right" else 0
    top, bottom = font.getbbox("Hg")[1::2]
    y -= (top + bottom) / 2 if va == "middle" else bottom if va == "bottom" else top
    try:
        draw.text((x, y), text, font=font, fill=fill)
    except Exception:  # never lose a plot to one odd name
        draw.text((x, y), ascii(text), font=font, fill=fill)


def _rotated_text(
    img: Image.Image, xy: tuple[float, float], text: str, font: Font, fill: RGB, angle: int
) -> None:
    """``text`` turned ``angle`` degrees counter-clockwise, its end (right edge, middle
    height) at ``xy``: column labels that end under their column."""
    if not text:
        return
    w = math.ceil(_width(font, text)) + 2
    top, bottom = font.getbbox("Hg")[1::2]
    h = math.ceil(bottom) + 2
    strip = Image.new("L", (w, h), 0)
    _text(ImageDraw.Draw(strip), (w - 1, (top + bottom) / 2), text, font, 255, ha="right")
    turned = strip.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    a = math.radians(angle)
    # The end (w - 1, middle) relative to the strip's centre, turned with it (y points down).
    ex, ey = w / 2 - 1, (top + bottom) / 2 - h / 2
    rx, ry = ex * math.cos(a) + ey * math.sin(a), -ex * math.sin(a) + ey * math.cos(a)
    x = round(xy[0] - (turned.width / 2 + rx))
    y = round(xy[1] - (turned.height / 2 + ry))
    img.paste(fill, (x, y, x + turned.width, y + turned.height), turned)


def _save(img: Image.Image, path: str | os.PathLike[str], force: bool) -> Path:
    return files.write_stream(
        path, lambda fh: img.save(fh, format="PNG", compress_level=1), force=force
    )


# --- learning curves ---------------------------------------------------------------


def curve_series(
    history: Sequence[dict[str, Any]], metric: str
) -> dict[str, tuple[list[int], list[float]]]:
    """The lines of one panel of :func:`learning_curves`: label -> (epochs, values).

    The validated fit (its ``train`` and ``fine_tune`` phases, one epoch count) gives a
    train and a val line; the refit (phase ``refit``) its own train line. Epochs without
    a value (NaN: no validation) are left out, and so are lines with no points. The refit
    trains a fresh head for the kept number of epochs, so its epochs count from 1 again:
    appended to the fit's line it would jump back across the plot."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for refit in (False, True):
        rows = [h for h in history if (h.get("phase") == "refit") == refit]
        for prefix, label in (("", "refit" if refit else "train"), ("val_", "val")):
            points = [
                (int(h["epoch"]), float(v))
                for h in rows
                if (v := h.get(prefix + metric)) is not None and v == v
            ]
            if points:
                series[f"{label} {metric}"] = ([e for e, _ in points], [v for _, v in points])
    return series


def _limits(values: Iterable[float], margin: float = 0.05) -> tuple[float, float]:
    """An axis range around ``values`` with a 5% margin; one value (or none) still gets
    a range."""
    finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if not math.isfinite(span):  # values near the float limits
        return lo, hi
    if span <= abs(hi) * 1e-9:
        pad = max(abs(hi) * 0.05, 0.05)
        return lo - pad, hi + pad
    return lo - span * margin, hi + span * margin


def _ticks(lo: float, hi: float, *, target: int = 6, integer: bool = False) -> list[float]:
    """Round tick values inside [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return []
    raw = span / target
    if integer:
        raw = max(raw, 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    if integer and step != int(step):
        step = math.ceil(step)
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, 12) + 0.0 for k in range(first, last + 1)]


def _tick_labels(ticks: list[float]) -> list[str]:
    if not ticks:
        return []
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = 0
    while digits < 8 and abs(step * 10**digits - round(step * 10**digits)) > 1e-6 * max(
        step * 10**digits, 1e-300
    ):
        digits += 1
    big = max(abs(t) for t in ticks)
    if big >= 1e6 or digits > 6:
        return [f"{t:.3g}" for t in ticks]
    return [f"{t:.{digits}f}" for t in ticks]


class _Canvas:
    """An image drawn at ``scale`` times its size, in coordinates of the final size."""

    def __init__(self, width: int, height: int, scale: int) -> None:
        self.scale = scale
        self.img = Image.new("RGB", (width * scale, height * scale), WHITE)
        self.draw = ImageDraw.Draw(self.img)

    def font(self, size: float) -> Font:
        return _font(round(size * self.scale))

    def p(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale, y * self.scale

    def line(self, points: Sequence[tuple[float, float]], fill: RGB, width: float) -> None:
        if len(points) > 1:
            w = max(1, round(width * self.scale))
            self.draw.line([self.p(x, y) for x, y in points], fill=fill, width=w, joint="curve")

    def dashed(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        fill: RGB,
        width: float,
        dash: float,
        gap: float,
    ) -> None:
        length = math.dist(a, b)
        if length == 0:
            return
        ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
        t = 0.0
        while t < length:
            end = min(t + dash, length)
            self.line(
                [(a[0] + ux * t, a[1] + uy * t), (a[0] + ux * end, a[1] + uy * end)], fill, width
            )
            t = end + gap

    def marker(self, kind: str, x: float, y: float, r: float, fill: RGB) -> None:
        cx, cy = self.p(x, y)
        r *= self.scale
        if kind == "o":
            self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif kind == "s":
            q = r * 0.85
            self.draw.rectangle((cx - q, cy - q, cx + q, cy + q), fill=fill)
        else:  # "^"
            self.draw.polygon(
                [(cx, cy - r * 1.15), (cx - r, cy + r * 0.75), (cx + r, cy + r * 0.75)], fill=fill
            )

    def rect(
        self, box: tuple[float, float, float, float], fill: RGB | None, outline: RGB | None = None
    ) -> None:
        x0, y0 = self.p(box[0], box[1])
        x1, y1 = self.p(box[2], box[3])
        self.draw.rectangle((x0, y0, x1, y1), fill=fill, outline=outline, width=self.scale)

    def text(self, xy: tuple[float, float], text: str, size: float, fill: RGB, **kw: str) -> None:
        _text(self.draw, self.p(*xy), text, self.font(size), fill, **kw)

    def width(self, text: str, size: float) -> float:
        return _width(self.font(size), text) / self.scale

    def result(self) -> Image.Image:
        return self.img if self.scale == 1 else self.img.reduce(self.scale)


_MARKERS = {"train": "o", "val": "s", "refit": "^"}


def _panel(
    c: _Canvas,
    box: tuple[float, float, float, float],
    metric: str,
    series: dict[str, tuple[list[int], list[float]]],
    vlines: list[tuple[float, RGB, str, str]],
) -> None:
    """One panel of the learning curves in ``box`` (left, top, right, bottom)."""
    tick_size, title_size = 11, 14
    lines = {
        label: [(e, v) for e, v in zip(epochs, values, strict=True) if math.isfinite(v)]
        for label, (epochs, values) in series.items()
    }
    xs = [float(e) for pts in lines.values() for e, _ in pts] + [x for x, *_ in vlines]
    ys = [v for pts in lines.values() for _, v in pts]
    x_lo, x_hi = _limits(xs)
    if xs and max(xs) == min(xs):
        x_lo, x_hi = min(xs) - 1, max(xs) + 1
    y_lo, y_hi = _limits(ys)
    xticks = _ticks(x_lo, x_hi, integer=True)
    yticks = _ticks(y_lo, y_hi)
    ylabels = _tick_labels(yticks)

    left = box[0] + 8 + max((c.width(s, tick_size) for s in ylabels), default=10)
    top, right, bottom = box[1] + 30, box[2] - 8, box[3] - 42
    title_y = box[1] + 15
    c.text(((left + right) / 2, title_y), metric, title_size, BLACK, ha="center")

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    for t in xticks:  # grid, then ticks and their numbers
        c.line([(px(t), top), (px(t), bottom)], GRID, 1)
    for t in yticks:
        c.line([(left, py(t)), (right, py(t))], GRID, 1)
    for t in xticks:
        c.line([(px(t), bottom), (px(t), bottom + 4)], AXIS, 1)
        c.text((px(t), bottom + 6), f"{t:g}", tick_size, BLACK, ha="center", va="top")
    for t, s in zip(yticks, ylabels, strict=True):
        c.line([(left - 4, py(t)), (left, py(t))], AXIS, 1)
        c.text((left - 6, py(t)), s, tick_size, BLACK, ha="right")
    c.text(((left + right) / 2, box[3] - 4), "epoch", tick_size, BLACK, ha="center", va="bottom")

    occupied: list[tuple[float, float]] = []  # sampled points of what the legend should avoid
    for x, colour, style, _ in vlines:
        if style == "dashed":
            c.dashed((px(x), top), (px(x), bottom), colour, 1.5, 6, 3)
        else:
            c.dashed((px(x), top), (px(x), bottom), colour, 1.5, 1.5, 2.5)
        occupied += [(px(x), top + (bottom - top) * i / 20) for i in range(21)]
    legend: list[tuple[str, RGB, str]] = []
    for label, pts in lines.items():
        kind = label.split()[0]
        colour = COLOURS.get(kind, BLACK)
        xy = [(px(e), py(v)) for e, v in pts]
        c.line(xy, colour, 2)
        gaps = [b[0] - a[0] for a, b in zip(xy, xy[1:], strict=False)]
        r = min(4.0, min(gaps, default=12.0) / 2.5)
        for x, y in xy if r >= 1.5 else []:
            c.marker(_MARKERS.get(kind, "o"), x, y, r, colour)
        for (x0, y0), (x1, y1) in zip(xy, xy[1:], strict=False):
            n = max(1, int(math.dist((x0, y0), (x1, y1)) // 4))
            occupied += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(n)]
        occupied += xy
        legend.append((label, colour, _MARKERS.get(kind, "o")))
    legend += [(name, colour, style) for _, colour, style, name in vlines]
    c.rect((left, top, right, bottom), None, AXIS)
    if legend:
        _legend(c, (left, top, right, bottom), legend, occupied)


def _legend(
    c: _Canvas,
    area: tuple[float, float, float, float],
    entries: list[tuple[str, RGB, str]],
    occupied: list[tuple[float, float]],
) -> None:
    """The legend box in the corner or edge of ``area`` that covers the fewest drawn
    points (matplotlib's ``loc="best"``, its order of preference)."""
    size, row, sample = 11, 18, 26
    w = 8 + sample + 6 + max(c.width(label, size) for label, *_ in entries) + 8
    h = 6 + row * len(entries) + 4
    left, top, right, bottom = area
    inset = 8
    xs = {"l": left + inset, "c": (left + right - w) / 2, "r": right - inset - w}
    ys = {"t": top + inset, "m": (top + bottom - h) / 2, "b": bottom - inset - h}
    order = ["tr", "tl", "bl", "br", "mr", "ml", "bc", "tc", "mc"]

    def covered(spot: str) -> int:
        x0, y0 = xs[spot[1]], ys[spot[0]]
        return sum(x0 <= x <= x0 + w and y0 <= y <= y0 + h for x, y in occupied)

    spot = min(order, key=covered)
    x0, y0 = xs[spot[1]], ys[spot[0]]
    c.rect((x0, y0, x0 + w, y0 + h), WHITE, (204, 204, 204))
    for i, (label, colour, style) in enumerate(entries):
        y = y0 + 6 + row * i + row / 2
        a, b = (x0 + 8, y), (x0 + 8 + sample, y)
        if style == "dashed":
            c.dashed(a, b, colour, 1.5, 6, 3)
        elif style == "dotted":
            c.dashed(a, b, colour, 1.5, 1.5, 2.5)
        else:
            c.line([a, b], colour, 2)
            c.marker(style, (a[0] + b[0]) / 2, y, 4, colour)
        c.text((b[0] + 6, y), label, size, BLACK)


def learning_curves(
    history: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    kept_epoch: int | None = None,
    force: bool = True,
) -> Path:
    """Loss and accuracy per epoch (:func:`curve_series`: the validated fit's train and
    validation lines, the refit's apart); dashed lines mark the fine-tuning start and the
    epoch whose weights were kept."""
    width, height = 1100, 440
    c = _Canvas(width, height, 2)
    vlines: list[tuple[float, RGB, str, str]] = []
    starts = [float(h["epoch"]) for h in history if h.get("phase") == "fine_tune"]
    if starts:
        vlines.append((min(starts) - 0.5, FINE_TUNE, "dashed", "fine-tuning"))
    if kept_epoch:
        vlines.append((float(kept_epoch), KEPT, "dotted", f"kept (epoch {kept_epoch})"))
    for i, metric in enumerate(("loss", "accuracy")):
        box = (i * width / 2 + 4, 4, (i + 1) * width / 2 - 4, height - 4)
        _panel(c, box, metric, curve_series(history, metric), vlines)
    return _save(c.result(), path, force)


# --- confusion matrix --------------------------------------------------------------


def _blue(fraction: float) -> RGB:
    """The Blues colour at ``fraction`` (0..1) of the way from white-ish to navy."""
    f = min(max(fraction, 0.0), 1.0) * (len(BLUES) - 1)
    i = min(int(f), len(BLUES) - 2)
    t = f - i
    a, b = BLUES[i], BLUES[i + 1]
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _count(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) and not v.is_integer() else str(int(v))


def confusion_matrix(
    cm: Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str,
    force: bool = True,
) -> Path:
    """A heat map with the count in every cell (up to 30 classes); rows are true classes,
    columns predicted."""
    k = len(classes)
    side = round(min(4.0 + 0.6 * k, 20.0) * 110)
    img = Image.new("RGB", (side, side), WHITE)
    draw = ImageDraw.Draw(img)
    values = [[cm[i][j] for j in range(k)] for i in range(k)]
    top_value = max((max(row) for row in values), default=0)

    title_font, axis_font = _font(14), _font(13)
    _text(
        draw,
        (side / 2, 20),
        _fit(title_font, _clean(title), side - 20),
        title_font,
        BLACK,
        ha="center",
    )
    margin_top, margin_right, edge = 42, 24, 10
    axis_h = 18  # the height of an axis label's line

    # Label size: as large as the cells allow (13 px at most); the names' room at most a
    # quarter or so of the side.
    names = [_clean(c) for c in classes]
    label_size = 13
    upright = k > MAX_CELL_COUNTS  # column names at 90 degrees: denser than at 45
    for _ in range(2):
        font = _font(label_size)
        room = min(0.28 * side, 260.0)
        labels = [_fit(font, n, room) for n in names]
        longest = max((_width(font, s) for s in labels), default=0.0)
        left = edge + axis_h + 8 + longest + 8
        bottom = (
            edge
            + axis_h
            + 8
            + (longest + 4 if upright else (longest + label_size) * math.sqrt(0.5))
            + 8
        )
        matrix = min(side - left - margin_right, side - margin_top - bottom)
        cell = matrix / k if k else matrix
        fits = min(13, math.floor(cell * 0.6))
        if fits >= label_size:
            break
        label_size = fits
    show_labels = k > 0 and label_size >= 5
    if not show_labels:  # too many classes to name: the matrix takes the room
        left, bottom = edge + axis_h + 8, edge + axis_h + 8
        matrix = min(side - left - margin_right, side - margin_top - bottom)
        cell = matrix / k if k else matrix
    if cell >= 4:
        cell = math.floor(cell)
        matrix = cell * k if k else matrix
    x0 = round(left + (side - margin_right - left - matrix) / 2)
    y0 = margin_top

    if k:
        heat = Image.new("RGB", (k, k))
        heat.putdata([_blue(v / top_value if top_value else 0.0) for row in values for v in row])
        size = max(1, round(matrix))
        img.paste(heat.resize((size, size), Image.Resampling.NEAREST), (x0, y0))

    def centre(i: int) -> float:
        return (i + 0.5) * matrix / k

    if k and k <= MAX_CELL_COUNTS:
        counts = [[_count(v) for v in row] for row in values]
        widest = max((s for row in counts for s in row), key=len)
        count_size = max(1, min(14, math.floor(cell * 0.4)))
        while count_size > 5 and _width(_font(count_size), widest) > cell * 0.9:
            count_size -= 1
        count_font = _font(count_size)
        for i in range(k):
            for j in range(k):
                dark = top_value and values[i][j] > top_value / 2
                _text(
                    draw,
                    (x0 + centre(j), y0 + centre(i)),
                    counts[i][j],
                    count_font,
                    WHITE if dark else BLACK,
                    ha="center",
                )
    draw.rectangle((x0 - 1, y0 - 1, x0 + matrix, y0 + matrix), outline=AXIS)
    if show_labels:
        font = _font(label_size)
        for i, label in enumerate(labels):
            y = y0 + centre(i)
            draw.line((x0 - 5, y, x0 - 1, y), fill=AXIS)
            _text(draw, (x0 - 8, y), label, font, BLACK, ha="right")
            x = x0 + centre(i)
            draw.line((x, y0 + matrix, x, y0 + matrix + 4), fill=AXIS)
            _rotated_text(img, (x, y0 + matrix + 8), label, font, BLACK, 90 if upright else 45)
    _text(
        draw,
        (x0 + matrix / 2, side - edge),
        "predicted class",
        axis_font,
        BLACK,
        ha="center",
        va="bottom",
    )
    end = y0 + matrix / 2 - _width(axis_font, "true class") / 2
    _rotated_text(img, (edge + axis_h / 2, end), "true class", axis_font, BLACK, 90)
    return _save(img, path, force)

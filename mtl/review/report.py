"""The review page: one self-contained HTML file (thumbnails as base64 data URIs),
flagged photos grouped by class, worst first, with the given and suggested class,
the score and the reason in words."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from mtl import files
from mtl.review.flags import Finding

THUMB = 200

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ccc}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{width:210px;border:1px solid #ddd;border-radius:6px;padding:5px;font-size:.8rem}
.card img{width:200px;height:200px;object-fit:contain;background:#f4f4f4;display:block}
.reason{font-weight:600}.wrong_label{color:#b00}.off_topic{color:#a50}.duplicate{color:#60a}
.file{word-break:break-all;color:#555}table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:left}
"""


def thumbnail_uri(path: Path, side: int = THUMB) -> str:
    """A JPEG thumbnail as a data URI (an inline SVG placeholder if it cannot be decoded)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (side, side))
            small = ImageOps.exif_transpose(img).convert("RGB")
            small.thumbnail((side, side))
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 - the page still shows the row
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{side}">'
            '<text x="10" y="20">unreadable</text></svg>'
        )
        return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def render(
    root: Path,
    classes: Sequence[str],
    findings: Sequence[Finding],
    counts: dict[str, int],
    total: int,
    settings: str,
) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>mtl review: {e(str(root))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>mtl review: {e(str(root))}</h1>",
        f"<p>{len(findings)} of {total} photos flagged. {e(settings)}</p><table>",
        "<tr><th>reason</th><th>photos</th></tr>",
        *(f"<tr><td>{e(r)}</td><td>{n}</td></tr>" for r, n in counts.items()),
        "</table>",
    ]
    for c in classes:
        mine = [f for f in findings if f.given == c]
        if not mine:
            continue
        parts.append(f"<h2>{e(c)} ({len(mine)})</h2><div class='grid'>")
        for f in sorted(mine, key=lambda f: -f.score):
            rel = f.path.relative_to(root).as_posix() if f.path.is_relative_to(root) else f.path
            suggestion = f"<br>suggested: <b>{e(f.suggested)}</b>" if f.suggested else ""
            parts.append(
                "<div class='card'>"
                f"<img src='{thumbnail_uri(f.path)}' alt='{e(str(rel))}'>"
                f"<span class='reason {e(f.reason)}'>{e(f.reason)}</span> "
                f"score {f.score:.2f}<br>given: <b>{e(f.given)}</b>{suggestion}"
                f"<br>{e(f.detail)}<br><span class='file'>{e(str(rel))}</span></div>"
            )
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write(path: Path, page: str) -> Path:
    return files.write_text(path, page, force=True)

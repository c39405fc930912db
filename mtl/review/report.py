"""The review page: one self-contained HTML file (thumbnails as base64 data URIs),
flagged photos grouped by class, worst first, with the given and suggested class,
the score and the reason in words.

Each thumbnail is the square the model saw (the centre square of ``fit="center"``,
train's default, or the whole photo squashed), so a photo flagged for what its
centre shows can be judged by it. Each card can be marked keep / remove / move to
a class; the page keeps the decisions as JSON in a text box and offers them as
``decisions.json`` (made in the browser: the page is a static file), which
``mtl review DATA --apply decisions.json`` applies (and ``--undo`` reverts).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

from mtl import files
from mtl.review.flags import REASON_TABLE, Finding

THUMB = 200

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ccc}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{width:210px;border:1px solid #ddd;border-radius:6px;padding:5px;font-size:.8rem}
.card img{width:200px;height:200px;object-fit:contain;background:#f4f4f4;display:block}
.reason{font-weight:600}
.file{word-break:break-all;color:#555}table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:left}
.decide{margin-top:4px}.decide label{display:block}
.card.remove{border-color:#b00;background:#fee}.card.move{border-color:#06a;background:#eef6ff}
#decisions{width:100%;height:8rem;font-family:monospace;font-size:.75rem}
""" + "".join(f".{r.name}{{color:{r.colour}}}" for r in REASON_TABLE if r.colour)

# Keeps the decisions box in step with the controls; the download is made from it.
_SCRIPT = """
(() => {
  const meta = JSON.parse(document.getElementById('mtl-meta').textContent);
  const box = document.getElementById('decisions');
  function decisions() {
    const rows = [...document.querySelectorAll('.card')].map(card => {
      const action = card.querySelector('input[type=radio]:checked').value;
      const row = {file: card.dataset.file, action: action, reason: card.dataset.reason};
      if (action === 'move') row['class'] = card.querySelector('select').value;
      card.className = 'card ' + action;
      return row;
    });
    return JSON.stringify({format: meta.format, data: meta.data, decisions: rows}, null, 1);
  }
  function update() { box.value = decisions(); }
  document.querySelectorAll('.card input, .card select').forEach(el => {
    el.addEventListener('change', () => {
      if (el.tagName === 'SELECT') {
        el.closest('.card').querySelector('input[value=move]').checked = true;
      }
      update();
    });
  });
  document.getElementById('download').addEventListener('click', ev => {
    update();
    const blob = new Blob([box.value + '\\n'], {type: 'application/json'});
    ev.currentTarget.href = URL.createObjectURL(blob);
  });
  update();
})();
"""


def thumbnail_uri(path: Path, side: int = THUMB, fit: str = "center") -> str:
    """The square the model saw (``fit`` as train's) as a JPEG data URI (an inline SVG
    placeholder if it cannot be decoded)."""
    from PIL import Image

    from mtl.data.images import load_image

    try:
        pixels = load_image(path, side, fit=fit)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=80)
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
    *,
    fit: str = "center",
) -> str:
    from mtl.review.actions import DECISIONS_FORMAT

    e = html.escape
    meta = json.dumps({"format": DECISIONS_FORMAT, "data": str(root)}).replace("<", "\\u003c")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>mtl review: {e(str(root))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>mtl review: {e(str(root))}</h1>",
        f"<p>{len(findings)} of {total} photos flagged. {e(settings)}</p><table>",
        "<tr><th>reason</th><th>photos</th><th>meaning</th></tr>",
        *(
            f"<tr><td class='{r.name}'>{r.name}</td><td>{counts[r.name]}</td>"
            f"<td>{e(r.meaning)}</td></tr>"
            for r in REASON_TABLE
            if counts.get(r.name)
        ),
        "</table>",
        "<p>Mark each photo keep, remove (set aside in _review/) or move to a class, then "
        "<a id='download' href='#' download='decisions.json'>download decisions.json</a> "
        f"and run <code>mtl review {e(str(root))} --apply decisions.json</code> "
        "(<code>--undo</code> reverts it). The pictures are the square the model saw.</p>",
        "<textarea id='decisions' readonly aria-label='decisions'></textarea>",
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
                f"<div class='card' data-file='{e(str(rel))}' data-reason='{e(f.reason)}'>"
                f"<img src='{thumbnail_uri(f.path, fit=fit)}' alt='{e(str(rel))}'>"
                f"<span class='reason {e(f.reason)}'>{e(f.reason)}</span> "
                f"score {f.score:.2f}<br>given: <b>{e(f.given)}</b>{suggestion}"
                f"<br>{e(f.detail)}<br><span class='file'>{e(str(rel))}</span>"
                f"{_controls(classes, f)}</div>"
            )
        parts.append("</div>")
    parts.append(f"<script type='application/json' id='mtl-meta'>{meta}</script>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(parts)


def _controls(classes: Sequence[str], f: Finding) -> str:
    """keep / remove / move to [class] for one card (keep checked: nothing moves unasked)."""
    e = html.escape
    name = f"d{f.index}"
    others = [c for c in classes if c != f.given]
    options = "".join(
        f"<option{' selected' if c == f.suggested else ''}>{e(c)}</option>" for c in others
    )
    move = (
        f"<label><input type='radio' name='{name}' value='move'> move to "
        f"<select aria-label='class'>{options}</select></label>"
        if others
        else ""
    )
    return (
        "<div class='decide'>"
        f"<label><input type='radio' name='{name}' value='keep' checked> keep</label>"
        f"<label><input type='radio' name='{name}' value='remove'> remove</label>{move}</div>"
    )


def write(path: Path, page: str) -> Path:
    return files.write_text(path, page, force=True)

"""The review page: ``report.html`` and its thumbnails, files in ``report-thumbs/`` beside it.

The page holds the flagged photos as data (one compact JSON row each, never the
unflagged ones, never an image) and shows them a page of cards at a time, sorted
by priority, class, reason or file and filtered by class or reason, so it opens
in seconds at 100,000 photos: its size grows with the flagged photos only, and a
browser fetches only the thumbnails of the cards shown (``loading=lazy``).

Each thumbnail is the square the model saw (the centre square of ``fit="center"``,
train's default, or the whole photo squashed), so a photo flagged for what its
centre shows can be judged by it; it is named by the photo's content, so a
second review reuses it. Each card can be marked keep / remove / move to a
class; the page keeps the decisions as JSON in a text box and offers them as
``decisions.json`` (made in the browser: the page is a static file), which
``mtl review DATA --apply decisions.json`` applies (and ``--undo`` reverts). The
decisions carry the folder's state and each photo's SHA-256, so they apply only
to the photos the page showed.

Everything shown comes from file and class names: the page builds the cards with
``textContent`` and DOM properties, never HTML from data, and the data block
escapes ``<``, so no name can run code in it.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from mtl import files
from mtl.errors import DataError
from mtl.review.flags import PRIORITY, REASON_TABLE, REASONS, Finding

THUMB = 200
# What the page saves and `mtl review DATA --apply FILE` reads (mtl.review.actions).
DECISIONS_FORMAT = "mtl-review-decisions"
PAGE = 60  # cards shown at once
THUMB_NAME = re.compile(r"[0-9a-f]{32}-[a-z]+\d+\.jpg")
STATUS = "<!--mtl-status-->"  # where --undo says the page was undone
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ccc}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{width:210px;border:1px solid #ddd;border-radius:6px;padding:5px;font-size:.8rem}
.card img{width:200px;height:200px;object-fit:contain;background:#f4f4f4;display:block}
.reason{font-weight:600}
.file{word-break:break-all;color:#555}table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:left}
.decide{margin-top:4px}.bar{margin:1rem 0;display:flex;gap:1rem;flex-wrap:wrap;align-items:center}
.undone{background:#fff3cd;border:1px solid #c90;padding:.5rem}
.nothumb{width:200px;height:200px;background:#f4f4f4}
.explain{font-size:.85rem;color:#444;max-width:60rem}.decide label{display:block}
.card.remove{border-color:#b00;background:#fee}.card.move{border-color:#06a;background:#eef6ff}
#decisions{width:100%;height:8rem;font-family:monospace;font-size:.75rem}
""" + "".join(f".{r.name}{{color:{r.colour}}}" for r in REASON_TABLE if r.colour)

# Builds the cards from the data (textContent and properties only: no name is parsed as
# HTML), a page at a time, and keeps the decisions box in step with the controls.
_SCRIPT = """
(() => {
  const meta = JSON.parse(document.getElementById('mtl-data').textContent);
  const classes = meta.classes, reasons = meta.reasons;
  const rows = meta.rows.map((r, i) => ({i: i, file: r[0], given: r[1], suggested: r[2],
    reason: r[3], priority: r[4], score: r[5], detail: r[6], thumb: r[7], sha256: r[8]}));
  const chosen = new Map();  // file -> {action, target}: what the user marked
  const $ = id => document.getElementById(id);
  const box = $('decisions'), cards = $('cards');
  const sortBy = $('sort'), byClass = $('class-filter'), byReason = $('reason-filter');
  let view = rows, page = 0;
  function el(tag, props) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (let i = 2; i < arguments.length; i++) e.append(arguments[i]);
    return e;
  }
  classes.forEach((c, i) => byClass.append(el('option', {value: String(i), textContent: c})));
  reasons.forEach(r => byReason.append(el('option', {value: r, textContent: r})));
  const orders = {
    priority: (a, b) => b.priority - a.priority || a.i - b.i,
    'class': (a, b) => classes[a.given].localeCompare(classes[b.given]) || a.i - b.i,
    reason: (a, b) => reasons.indexOf(a.reason) - reasons.indexOf(b.reason) || a.i - b.i,
    file: (a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0),
  };
  function decisions() {
    const out = [];
    rows.forEach(x => {
      const d = chosen.get(x.file);
      if (!d) return;
      const row = {file: x.file, action: d.action, reason: x.reason, sha256: x.sha256};
      if (d.action === 'move') row['class'] = classes[d.target];
      out.push(row);
    });
    return JSON.stringify({format: meta.format, data: meta.data, state: meta.state,
                           decisions: out}, null, 1);
  }
  function update() { box.value = decisions(); }
  function card(x) {
    const d = chosen.get(x.file) || {action: 'keep', target: x.suggested};
    const c = el('div', {className: 'card ' + d.action});
    c.dataset.file = x.file;
    c.dataset.reason = x.reason;
    const img = x.thumb
      ? el('img', {alt: x.file, loading: 'lazy', width: 200, height: 200, src: x.thumb})
      : el('div', {className: 'nothumb', textContent: 'unreadable'});
    const info = el('div', {},
      el('span', {className: 'reason ' + x.reason, textContent: x.reason}),
      ' priority ' + x.priority.toFixed(2) + ' (score ' + x.score.toFixed(2) + ')',
      el('br'), 'given: ', el('b', {textContent: classes[x.given]}));
    if (x.suggested >= 0) info.append(el('br'), 'suggested: ',
                                      el('b', {textContent: classes[x.suggested]}));
    info.append(el('br'), x.detail, el('br'), el('span', {className: 'file', textContent: x.file}));
    const decide = el('div', {className: 'decide'});
    const name = 'd' + x.i;
    const radio = v => el('input', {type: 'radio', name: name, value: v, checked: d.action === v});
    const set = (action, target) => {
      chosen.set(x.file, {action: action, target: target});
      c.className = 'card ' + action;
      update();
    };
    const keep = radio('keep'), remove = radio('remove');
    decide.append(el('label', {}, keep, ' keep'), el('label', {}, remove, ' remove'));
    keep.addEventListener('change', () => set('keep', select ? Number(select.value) : -1));
    remove.addEventListener('change', () => set('remove', select ? Number(select.value) : -1));
    let select = null;
    const others = classes.map((n, i) => i).filter(i => i !== x.given);
    if (others.length) {
      select = el('select', {ariaLabel: 'class'});
      select.setAttribute('aria-label', 'class');
      others.forEach(i => select.append(el('option', {value: String(i), textContent: classes[i]})));
      const target = d.target >= 0 && d.target !== x.given ? d.target : others[0];
      select.value = String(target);
      const move = radio('move');
      move.addEventListener('change', () => set('move', Number(select.value)));
      select.addEventListener('change', () => {
        move.checked = true;
        set('move', Number(select.value));
      });
      decide.append(el('label', {}, move, ' move to ', select));
    }
    c.append(img, info, decide);
    return c;
  }
  function show() {
    const pages = Math.max(1, Math.ceil(view.length / meta.page));
    page = Math.min(Math.max(page, 0), pages - 1);
    cards.replaceChildren(...view.slice(page * meta.page, (page + 1) * meta.page).map(card));
    $('page-info').textContent = 'page ' + (page + 1) + ' of ' + pages + ' (' + view.length +
      ' photos)';
    $('prev').disabled = page === 0;
    $('next').disabled = page >= pages - 1;
  }
  function refilter() {
    const c = byClass.value, r = byReason.value;
    view = rows.filter(x => (c === '' || x.given === Number(c)) && (r === '' || x.reason === r));
    view.sort(orders[sortBy.value]);
    page = 0;
    show();
  }
  [sortBy, byClass, byReason].forEach(s => s.addEventListener('change', refilter));
  $('prev').addEventListener('click', () => { page -= 1; show(); });
  $('next').addEventListener('click', () => { page += 1; show(); });
  $('download').addEventListener('click', ev => {
    update();
    const blob = new Blob([box.value + '\\n'], {type: 'application/json'});
    ev.currentTarget.href = URL.createObjectURL(blob);
  });
  refilter();
  update();
})();
"""


@dataclass(frozen=True)
class Shown:
    """What the page shows of one photo besides its finding."""

    thumb: str  # relative URL of its thumbnail ("": the placeholder)
    sha256: str  # of the photo's bytes ("": unreadable)


def thumbs_folder(page: Path) -> Path:
    """``report-thumbs/`` beside ``report.html``: the page's own, named after it."""
    return page.with_name(f"{page.stem}-thumbs")


def check_thumbs_folder(page: Path) -> Path:
    """The thumbnails' folder, refused (exit 2) if a link or not a folder: review writes
    and deletes in it, and never through a link."""
    folder = thumbs_folder(page)
    if folder.is_symlink():
        raise DataError(
            f"{folder} is a symbolic link (to {os.readlink(folder)}); mtl review writes "
            "thumbnails only into a real folder: remove the link; nothing was written"
        )
    if os.path.lexists(folder) and not folder.is_dir():
        raise DataError(f"{folder} is not a folder; move it away; nothing was written")
    return folder


def thumbnail(path: Path, side: int = THUMB, fit: str = "center") -> bytes:
    """The square the model saw (``fit`` as train's), as JPEG bytes."""
    from PIL import Image

    from mtl.data.images import load_image

    buf = io.BytesIO()
    Image.fromarray(load_image(path, side, fit=fit)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def make_thumbs(
    findings: Sequence[Finding],
    page: Path,
    *,
    fit: str = "center",
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[int, Shown]:
    """A thumbnail file for each finding (reused when one of the same photo is there),
    on every core, and the photos' SHA-256; thumbnails no finding uses are removed."""
    from mtl.data.images import open_regular

    folder = check_thumbs_folder(page)
    folder.mkdir(parents=True, exist_ok=True)

    def one(f: Finding) -> Shown:
        try:
            with open_regular(f.path) as fh:
                sha = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return Shown("", "")
        name = f"{sha[:32]}-{fit}{THUMB}.jpg"
        target = folder / name
        if not (target.is_file() and not target.is_symlink()):
            try:
                files.write_bytes(target, thumbnail(f.path, fit=fit), force=True)
            except Exception:  # noqa: BLE001 - a photo that cannot be decoded: the placeholder
                return Shown("", sha)
        return Shown(f"{quote(folder.name)}/{name}", sha)

    out: dict[int, Shown] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for n, (f, shown) in enumerate(zip(findings, pool.map(one, findings), strict=True), 1):
            out[f.index] = shown
            if on_progress:
                on_progress(n, len(findings))
    used = {s.thumb.rsplit("/", 1)[-1] for s in out.values() if s.thumb}
    for entry in os.scandir(folder):
        stale = THUMB_NAME.fullmatch(entry.name) and entry.name not in used
        if stale and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
    return out


def render(
    root: Path,
    classes: Sequence[str],
    findings: Sequence[Finding],
    counts: dict[str, int],
    total: int,
    settings: str,
    *,
    shown: Mapping[int, Shown] | None = None,
    state: str = "",
) -> str:
    """The page: the flagged photos as one JSON data block, shown by the script."""
    e = html.escape
    index = {c: i for i, c in enumerate(classes)}
    shown = shown or {}
    rows = []
    for f in findings:
        rel = f.path.relative_to(root).as_posix() if f.path.is_relative_to(root) else str(f.path)
        s = shown.get(f.index, Shown("", ""))
        suggested = index.get(f.suggested, -1) if f.suggested else -1
        rows.append([rel, index[f.given], suggested, f.reason, round(f.priority, 3),
                     round(f.score, 3), f.detail, s.thumb, s.sha256])  # fmt: skip
    data = {
        "format": DECISIONS_FORMAT,
        "data": str(root),
        "state": state,
        "classes": list(classes),
        "reasons": list(REASONS),
        "page": PAGE,
        "rows": rows,
    }
    # Inside <script>: "<" escaped, so no name can close the element.
    block = json.dumps(data, separators=(",", ":"))  # ASCII: an undecodable name is kept
    block = block.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>mtl review: {e(str(root))}</title><style>{_STYLE}</style></head><body>",
        STATUS,
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
        f"<p class='explain'>Sorted worst first by priority. {e(PRIORITY)} The score is how "
        "far past its own threshold the photo's reason is (0.5 at it, towards 1).</p>",
        "<p>Mark each photo keep, remove (set aside in _review/) or move to a class, then "
        "<a id='download' href='#' download='decisions.json'>download decisions.json</a> "
        f"and run <code>mtl review {e(str(root))} --apply decisions.json</code> "
        "(<code>--undo</code> reverts it). The pictures are the square the model saw. "
        "Decisions are kept while you page, sort and filter; only the photos you mark are "
        "in the file, each with its SHA-256: a photo changed since is not touched.</p>",
        "<div class='bar'><label>sort <select id='sort'>"
        "<option value='priority'>priority, worst first</option>"
        "<option value='class'>class</option><option value='reason'>reason</option>"
        "<option value='file'>file</option></select></label>"
        "<label>class <select id='class-filter'><option value=''>all</option></select></label>"
        "<label>reason <select id='reason-filter'><option value=''>all</option></select>"
        "</label><button id='prev' type='button'>previous</button>"
        "<span id='page-info'></span><button id='next' type='button'>next</button></div>",
        "<div id='cards' class='grid'></div>",
        "<textarea id='decisions' readonly aria-label='decisions'></textarea>",
        f"<script type='application/json' id='mtl-data'>{block}</script>",
        f"<script>{_SCRIPT}</script></body></html>\n",
    ]
    return "".join(parts)


def write(path: Path, page: str) -> Path:
    # A file name that is not UTF-8 shows as "?" in the text; the data block keeps it exact.
    return files.write_bytes(path, page.encode("utf-8", "replace"), force=True)


def build(
    target: Path,
    root: Path,
    classes: Sequence[str],
    findings: Sequence[Finding],
    counts: dict[str, int],
    total: int,
    settings: str,
    *,
    fit: str = "center",
    state: str = "",
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """The page at ``target`` and its thumbnails beside it (:func:`thumbs_folder`)."""
    shown = make_thumbs(findings, target, fit=fit, on_progress=on_progress)
    page = render(root, classes, findings, counts, total, settings, shown=shown, state=state)
    return write(target, page)


def mark_undone(page: Path, restored: int, when: str) -> None:
    """Say on the page (kept: the record of what was found) that ``--undo`` put the photos
    back. Never through a link; a page that is not review's own is left as it is."""
    if page.is_symlink() or not page.is_file():
        return
    try:
        text = files.read_text_limited(page, 256 << 20, "a review page")
    except (OSError, UnicodeDecodeError, DataError):
        return
    if STATUS not in text:
        return
    note = (
        f"<p class='undone'>Undone {html.escape(when)}: mtl review --undo put {restored} "
        "photo(s) back where they were. This page shows the folder as it was when the "
        "review ran; a decisions file saved from it now applies only to photos still "
        "unchanged.</p>"
    )
    files.write_text(page, text.replace(STATUS, note + STATUS, 1), force=True)

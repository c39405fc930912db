"""The page ``mtl serve`` shows at ``/``: drop photos (or choose them), see the top classes
of each as bars. One self-contained HTML document: no remote script, style or font, so it
works offline; it speaks to the same ``POST /predict`` as any client."""

from __future__ import annotations

import json

TOP = 5  # classes shown per photo

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mtl serve: __MODEL__</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 56rem;
         padding: 1.5rem; color: #1d1d1f; background: #fafafa; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  .sub { color: #666; margin: 0 0 1rem; }
  #drop { display: block; border: 2px dashed #999; border-radius: 10px; padding: 2rem;
          text-align: center; background: #fff; cursor: pointer; }
  #drop.over { border-color: #2563eb; background: #eef4ff; }
  #status { min-height: 1.4rem; margin: .6rem 0; color: #555; }
  #status.error { color: #b91c1c; }
  .result { display: flex; gap: 1rem; align-items: flex-start; background: #fff;
            border: 1px solid #ddd; border-radius: 8px; padding: .8rem; margin: .6rem 0; }
  .result img { width: 112px; height: 112px; object-fit: cover; border-radius: 6px;
                background: #eee; }
  .result .name { font-weight: 600; margin-bottom: .3rem; word-break: break-all; }
  .result .preds { flex: 1; }
  .row { display: grid; grid-template-columns: 10rem 1fr 4.5rem; gap: .5rem;
         align-items: center; margin: .2rem 0; }
  .track { background: #e5e7eb; border-radius: 4px; height: .9rem; overflow: hidden; }
  .bar { background: #2563eb; height: 100%; }
  .row:first-child .label { font-weight: 600; }
  .prob { text-align: right; font-variant-numeric: tabular-nums; }
  .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
</style>
</head>
<body>
<h1>__MODEL__</h1>
<p class="sub">__KIND__ model, __COUNT__ classes: __CLASSES__.
  <a href="docs">API docs</a> &middot; <a href="metadata">metadata</a></p>
<label id="drop">Drop photos here, or click to choose
  <input id="file" type="file" accept="image/*" multiple hidden>
</label>
<div id="status"></div>
<div id="results"></div>
<script>
const TOP = __TOP__;
const drop = document.getElementById('drop');
const input = document.getElementById('file');
const statusLine = document.getElementById('status');
const results = document.getElementById('results');

function say(text, error) {
  statusLine.textContent = text;
  statusLine.className = error ? 'error' : '';
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function show(file, answer) {
  const card = el('div', 'result');
  card.dataset.file = answer.file;
  const img = el('img');
  img.alt = answer.file;
  img.src = URL.createObjectURL(file);
  const preds = el('div', 'preds');
  preds.appendChild(el('div', 'name', answer.file));
  for (const p of answer.predictions) {
    const row = el('div', 'row');
    const track = el('div', 'track');
    const bar = el('div', 'bar');
    bar.style.width = (100 * p.probability).toFixed(1) + '%';
    track.appendChild(bar);
    row.append(el('span', 'label', p.label), track,
               el('span', 'prob', (100 * p.probability).toFixed(1) + '%'));
    preds.appendChild(row);
  }
  card.append(img, preds);
  results.prepend(card);
}

async function send(files) {
  files = [...files];
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append('file', f, f.name);
  say('predicting ' + files.length + ' photo' + (files.length > 1 ? 's' : '') + '...');
  try {
    const response = await fetch('predict?k=' + TOP, {method: 'POST', body: form});
    const answer = await response.json();
    if (!response.ok) { say(answer.error || response.statusText, true); return; }
    answer.forEach((a, i) => show(files[i], a));
    say('');
  } catch (e) {
    say('the server did not answer: ' + e, true);
  }
}

input.addEventListener('change', () => { send(input.files); input.value = ''; });
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => {
  e.preventDefault();
  drop.classList.remove('over');
  send(e.dataTransfer.files);
});
</script>
</body>
</html>
"""


def render_page(model: str, kind: str, class_names: list[str]) -> str:
    """The page for a model; ``model`` is already HTML-escaped."""
    import html

    shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
    return (
        PAGE.replace("__MODEL__", model)
        .replace("__KIND__", html.escape(kind))
        .replace("__COUNT__", str(len(class_names)))
        .replace("__CLASSES__", html.escape(shown))
        .replace("__TOP__", json.dumps(min(TOP, len(class_names))))
    )

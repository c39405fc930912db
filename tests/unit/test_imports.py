"""The import contract (docs/architecture.md, "Layering rules"), read from the source with
``ast``: every import counts, those inside functions and under ``TYPE_CHECKING`` too.

- a module imports only from its own layer or the layers below it;
- the packages of the feature layer (train, predict/evaluate/export, review, fetch) do not
  import one another: what two of them share lives below both;
- no import circle between modules, and none runs back up to the ``mtl`` package root.

Rules, not file lists: a new module is placed by the package it is in.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A module belongs to the layer of its longest matching package.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("mtl._version", "mtl.errors", "mtl.progress", "mtl.safepaths", "mtl.files",
                    "mtl.locks", "mtl.runtime", "mtl.litert", "mtl.live", "mtl.reprs",
                    "mtl.configs")),
    ("data", ("mtl.assets", "mtl.data", "mtl.report")),
    ("model", ("mtl.model",)),
    ("pipeline", ("mtl.pipeline",)),
    ("features", ("mtl.training", "mtl.inference", "mtl.review", "mtl.crawler")),
    ("deploy", ("mtl.deploy",)),  # exports and the server: above predict, which they reuse
    ("interface", ("mtl.cli", "mtl.__main__")),
]  # fmt: skip
PEERS = "features"  # its packages never import one another
KNOWN_CIRCLES: list[list[str]] = []


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "mtl").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the mtl modules it imports (a name imported from a package counts as
    its submodule when it is one)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]  # fmt: skip
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def layer_of(module: str) -> int:
    best, where = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, where = len(p), i
    return where


MODS = modules()
EDGES = imports(MODS)


def test_every_module_has_a_layer():
    assert [m for m in MODS if m != "mtl" and layer_of(m) < 0] == []


def test_no_module_imports_a_higher_layer():
    wrong = [
        f"{m} ({LAYERS[layer_of(m)][0]}) -> {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in EDGES.items()
        if m != "mtl"
        for t in targets
        if t != "mtl" and layer_of(t) > layer_of(m)
    ]
    assert wrong == []


def test_feature_packages_do_not_import_one_another():
    peers = LAYERS[[n for n, _ in LAYERS].index(PEERS)][1]
    wrong = [
        f"{m} -> {t}"
        for m, targets in EDGES.items()
        for t in targets
        if package_of(m) in peers and package_of(t) in peers and package_of(m) != package_of(t)
    ]
    assert wrong == []


def test_inference_and_review_never_import_training():
    wrong = [
        f"{m} -> {t}"
        for m, targets in EDGES.items()
        if m.startswith(("mtl.inference", "mtl.review"))
        for t in targets
        if t.startswith("mtl.training")
    ]
    assert wrong == []


def test_nothing_imports_the_package_root():
    """``mtl/__init__.py`` is the API on top of everything: importing it from below would
    load every command (``from mtl import files`` names a submodule, and is fine)."""
    assert [m for m, targets in EDGES.items() if "mtl" in targets] == []


def test_no_import_circles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(EDGES.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for m in sorted(MODS):
        if m not in index:
            visit(m)
    assert sorted(circles) == sorted(KNOWN_CIRCLES)


def test_the_contract_sees_lazy_imports():
    """The walk finds an import inside a function, a relative one and a submodule named
    in ``from package import name``, so a lazy import cannot slip through."""
    assert "mtl.inference.litekeras" in EDGES["mtl.inference.predict"]  # inside open_model
    assert "mtl.files" in EDGES["mtl.report.plots"]  # from mtl import files

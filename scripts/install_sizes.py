"""What each mtl install weighs: the installed size of the dependency closure of mtl
and of each extra (as pyproject.toml declares them), summed from the installed files
of this environment: about what ``du`` of a fresh virtual environment shows, less pip.

    .venv/bin/python scripts/install_sizes.py     (run in an environment with mtl[all])
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> set[str]:
    """Every distribution ``requirements`` pull in, by normalised name."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        item = (key(req.name), frozenset(req.extras))
        if item in seen:
            continue
        seen.add(item)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            print(f"  (not installed here, not counted: {req.name})", file=sys.stderr)
            continue
        for raw in dist.requires or []:
            sub = Requirement(raw)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append(sub)
    return {name for name, _ in seen}


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    todo = list(extras)
    while todo:
        for raw in project["optional-dependencies"][todo.pop()]:
            req = Requirement(raw)
            if key(req.name) == "mtl":
                todo += sorted(req.extras)
            else:
                reqs.append(raw)
    return [r for r in reqs if Requirement(r).marker is None or Requirement(r).marker.evaluate()]


def installed_bytes(name: str) -> int:
    try:
        return sum((f.size or 0) for f in metadata.distribution(name).files or [])
    except metadata.PackageNotFoundError:
        return 0


def main() -> None:
    for extras in ([], ["onnx"], ["train"], ["all"]):
        names = closure(requirements(extras))
        total = sum(installed_bytes(n) for n in names)
        label = f"mtl[{','.join(extras)}]" if extras else "mtl"
        print(f"{label:12} {len(names):3} packages  {total / 2**20:6.0f} MiB installed")


if __name__ == "__main__":
    main()

"""A folder-per-class dataset: scanning, an exactly stratified stable split, class weights.

Nothing here imports Keras. Decoding (the per-file check) happens once, in
:mod:`mtl.data.features`, and its failures come back here as skipped files.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtl import files
from mtl.data.images import IMAGE_EXTENSIONS, REVIEW_FOLDER, is_image_name, list_images
from mtl.errors import DataError
from mtl.reprs import HIDDEN
from mtl.safepaths import relative_problem

MANIFEST = "manifest.jsonl"
MANIFEST_LIMIT = 256 << 20  # about a million photos' lines
# The one table of split folders, read by every command (train's scan, evaluate, review's
# moves, undo and page decisions): a folder's name, in any case, to its role. The names
# Ultralytics, fastai, Roboflow and Hugging Face's imagefolder write: DATA/train/ with a
# validation folder (used as given) and test/ (held out: scored once after training,
# never trained or validated on). Never class names.
SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
TRAIN_FOLDER = "train"
VAL_FOLDERS = tuple(name for name, role in SPLIT_NAMES.items() if role == "val")
TEST_FOLDER = "test"
SPLIT_FOLDERS = tuple(SPLIT_NAMES)
# What marks a folder as a run folder of `mtl train` (its model, or its checkpoint record):
# inside DATA (`--out data/run`) it is never a class, its plots never training photos.
RUN_MARKERS = ("model.keras", "checkpoint/run.json", "split.csv")


def split_role(name: str) -> str | None:
    """ "train", "val" or "test" for a split folder's name (any case, any alias), else None."""
    return SPLIT_NAMES.get(name.lower())


MIN_PER_CLASS = 10
MAX_IMBALANCE = 5.0


@dataclass(frozen=True)
class Item:
    path: Path
    label: int
    subset: str  # "train", "val" or "test"


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    items: list[Item]
    layout: str  # "split" (hash split of class folders) or "train/val" (given)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    warnings: list[str] = field(default_factory=list)
    # DATA/test/: held out, never in ``items`` (nothing trains, validates or caches on it)
    test: list[Item] = field(default_factory=list)
    val_dir: Path | None = None  # the given validation folder (layout "train/val")

    def subset(self, name: str) -> list[Item]:
        return [it for it in self.items if it.subset == name]

    def counts(self, name: str) -> list[int]:
        counts = [0] * len(self.classes)
        for it in self.subset(name):
            counts[it.label] += 1
        return counts

    def drop(self, failures: Sequence[tuple[Path, str]]) -> None:
        """Remove files that failed the decode check and record why."""
        bad = {Path(p): reason for p, reason in failures}
        if not bad:
            return
        self.items = [it for it in self.items if it.path not in bad]
        self.skipped.extend((str(p), r) for p, r in sorted(bad.items()))


def split_fraction(relative: str, seed: int) -> float:
    """Where a file ranks in [0, 1): a hash of its path inside its class folder and the seed.

    As TensorFlow's retrain.py did, a file's rank depends on its own name only,
    so adding or removing other files never changes it.
    """
    digest = hashlib.sha1(f"{seed}\0{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def held_out_count(n: int, val_split: float) -> int:
    """How many of a class's ``n`` files are held out: ``val_split * n`` rounded half up,
    but at least one on each side for a class of 2+ files (none when ``val_split`` is 0)."""
    if val_split <= 0 or n < 2:
        return 0
    return min(max(1, math.floor(val_split * n + 0.5)), n - 1)


def stable_split(
    files: Sequence[Path], folder: Path, val_split: float, seed: int
) -> list[tuple[Path, str]]:
    """Each file of one class to "train" or "val": exactly :func:`held_out_count` files,
    those of lowest hash rank, are held out. Adding a photo to a class moves at most
    one of its other photos across (the one at the boundary of the ranking)."""
    keyed = sorted((split_fraction(p.relative_to(folder).as_posix(), seed), p) for p in files)
    k = held_out_count(len(files), val_split)
    return sorted((p, "val" if i < k else "train") for i, (_, p) in enumerate(keyed))


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is a run folder of ``mtl train`` (or a folder of them, ``runs/``)."""

    def marked(d: Path) -> bool:
        return any((d / m).exists() for m in RUN_MARKERS)

    if marked(folder):
        return True
    subs = 0
    try:
        with os.scandir(folder) as found:  # a class folder of many photos: no stat each
            for entry in found:
                if entry.is_dir():
                    if not marked(Path(entry.path)):
                        return False
                    subs += 1
    except OSError:
        return False
    return subs > 0


def _sub_folders(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != REVIEW_FOLDER
    )


def class_folders(folder: Path) -> list[Path]:
    """The sub-folders that are classes: not hidden, not review's ``_review/``, not a run
    folder of ``mtl train`` (``--out DATA/run``)."""
    return [p for p in _sub_folders(folder) if not is_run_folder(p)]


def run_folders(folder: Path) -> list[Path]:
    """The run folders of ``mtl train`` among ``folder``'s sub-folders (left out of scans)."""
    return [p for p in _sub_folders(folder) if is_run_folder(p)]


def _read_manifest(root: Path) -> dict[str, set[Path]] | None:
    """Files per class listed in ``manifest.jsonl`` (from ``mtl fetch``), if there is one.

    Each line is a JSON object with the image's path (``path`` or ``file``,
    relative to the dataset folder) and optionally its class (``label`` or
    ``class``, else the first folder of the path). Lines with ``"skip": true`` or
    a ``status`` other than ``"ok"`` are left out.
    """
    path = root / MANIFEST
    if not path.is_file():
        return None
    listed: dict[str, set[Path]] = {}
    try:
        text = files.read_text_limited(path, MANIFEST_LIMIT, "a manifest")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise DataError(f"cannot read {path}: {why}; fix or delete the file") from None
    # split("\n"), not splitlines(): U+2028 inside a JSON string is not a line break.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            entry = files.loads_json(line)
            rel = entry.get("path") or entry.get("file")
            if not isinstance(rel, str):
                raise ValueError("no path")
        except (ValueError, AttributeError):
            raise DataError(f"{path} line {n} is not a JSON object with a path") from None
        if entry.get("skip") or entry.get("status", "ok") != "ok":
            continue
        why = relative_problem(rel)
        file = (root / rel).resolve()
        if why or not file.is_relative_to(root.resolve()):
            raise DataError(
                f"{path} line {n} names a file outside {root}: {rel!r} ({why or 'a symlink'})"
            )
        label = entry.get("label") or entry.get("class") or Path(rel).parts[0]
        listed.setdefault(str(label), set()).add(file)
    return listed


def _scan_classes(folder: Path, manifest: dict[str, set[Path]] | None) -> dict[str, list[Path]]:
    dirs = class_folders(folder)
    loose = [p for p in folder.iterdir() if p.is_file() and is_image_name(p)]
    if not dirs:
        hint = " (images must be in one sub-folder per class)" if loose else ""
        raise DataError(f"no class folders in {folder}{hint}")
    found: dict[str, list[Path]] = {}
    for d in dirs:
        files = list_images(d)
        if manifest is not None:
            keep = manifest.get(d.name, set())
            files = [f for f in files if f.resolve() in keep]
        found[d.name] = files
    return found


def label_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name in a one-per-line labels file, or None.

    Any character ``str.splitlines`` breaks on (``\\n``, ``\\r``, U+2028, U+0085,
    ``\\x0b``, ...) would make the exported labels file disagree with the model. Any
    other control character (ESC, DEL, C1) or bidi control (U+202E) would travel into
    every export's metadata and act on the terminal or page that shows the name
    (:data:`mtl.reprs.HIDDEN`): checked where a class name enters mtl (``train``'s
    class folders) and where it leaves (every export).
    """
    if not name.strip():
        return "it is blank"
    if len((name + "x").splitlines()) > 1:
        return "it contains a line break"
    if name != name.strip():
        return "it starts or ends with white space"
    hidden = HIDDEN.search(name)
    if hidden:
        return f"it contains the control character U+{ord(hidden[0]):04X}"
    return None


def _check_classes(found: dict[str, list[Path]], where: Path) -> None:
    for c in found:
        why = label_problem(c)
        if why:
            raise DataError(f"class folder {str(where / c)!r} cannot be a class name: {why}")
        if split_role(c):
            raise DataError(
                f"class folder {where / c} is named like a split folder "
                f"({', '.join(SPLIT_FOLDERS)}, in any case), never a class: rename it"
            )
    total = sum(len(v) for v in found.values())
    if total == 0:
        raise DataError(
            f"no images in {where} (looked for {', '.join(IMAGE_EXTENSIONS)} in its class folders)"
        )
    empty = [c for c, files in found.items() if not files]
    if empty:
        raise DataError(f"class folder {where / empty[0]} holds no images; add some or remove it")
    if len(found) < 2:
        only = next(iter(found))
        raise DataError(f"only one class ({only!r}) in {where}; need at least 2 class folders")


def scan(root: str | Path, *, val_split: float = 0.2, seed: int = 42) -> Dataset:
    """Find classes and images under ``root`` and split them; no image is decoded here.

    ``root/train`` (class folders) is the training set: with ``root/val`` (or ``valid``,
    ``validation``) as the validation set, as given; else split by :func:`stable_split`.
    ``root/test`` is held out (:attr:`Dataset.test`). Without ``root/train``, the class
    folders of ``root`` are split by :func:`stable_split`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    splits = split_layout(root)
    if splits is not None:
        ds = _scan_split_folders(root, splits, val_split, seed)
    else:
        ds = _scan_class_folders(root, val_split, seed)
    runs = run_folders(root)
    if runs:
        ds.warnings.append(
            f"left out {', '.join(p.name + '/' for p in runs)}: run folder(s) of mtl train, "
            "not classes"
        )
    ds.warnings.extend(overlap_warnings(ds))
    return ds


def _scan_class_folders(root: Path, val_split: float, seed: int) -> Dataset:
    manifest = _read_manifest(root)
    found = _scan_classes(root, manifest)
    _check_classes(found, root)
    classes = sorted(found)
    items = [
        Item(p, label, side)
        for label, c in enumerate(classes)
        for p, side in stable_split(found[c], root / c, val_split, seed)
    ]
    ds = Dataset(root=root, classes=classes, items=items, layout="split")
    if manifest is not None:
        unlisted = sum(len(list_images(root / c)) for c in classes) - len(items)
        if unlisted:
            ds.warnings.append(
                f"{unlisted} image file(s) not listed in {root / MANIFEST} are left out "
                "(run mtl fetch again to check and add them, or delete the manifest)"
            )
    return ds


def _slashed(folders: Sequence[Path]) -> str:
    return ", ".join(p.name + "/" for p in folders)


def split_layout(root: Path) -> dict[str, Path] | None:
    """``root``'s split folders by role (``{"train": root/Train, "val": root/valid}``), or
    None for a folder of class folders. Read from :data:`SPLIT_NAMES` (any case); a layout
    that could be read two ways is refused (exit 2) saying what was found: split folders
    without ``train/``, split folders beside class folders, two folders of one role."""
    folders = class_folders(root)
    splits = [d for d in folders if split_role(d.name)]
    if not splits:
        return None
    # Folders beside split folders count when they hold images (notes, scripts: ignored).
    classes = [d for d in folders if not split_role(d.name) and list_images(d)]
    where = (
        f"put the training photos in {root / TRAIN_FOLDER}/<class>/ (validation in "
        f"{'/, '.join(VAL_FOLDERS)}/, held-out photos in {TEST_FOLDER}/)"
    )
    has_train = any(split_role(d.name) == "train" for d in splits)
    if not classes and not has_train:
        # Split folders without train/ would train a "test vs val" model.
        raise DataError(
            f"{root} holds split folders ({_slashed(splits)}), not class folders, and no "
            f"{TRAIN_FOLDER}/: {where}, or give the folder of class folders itself"
        )
    if classes and not has_train:
        raise DataError(
            f"{root} mixes split folders ({_slashed(splits)}) with class folders "
            f"({_slashed(classes)}): a split folder is never a class; {where}, or rename them"
        )
    if classes:
        raise DataError(
            f"{root} has {_slashed(splits)} and also class folders beside them "
            f"({_slashed(classes)}), which would be left out: move them into "
            f"{TRAIN_FOLDER}/ (or a validation or {TEST_FOLDER}/ folder), or out of {root}"
        )
    by_role: dict[str, Path] = {}
    for d in splits:
        role = split_role(d.name) or ""
        if role in by_role:
            what = "validation" if role == "val" else role
            first = by_role[role].name
            raise DataError(f"{root} has {first}/ and {d.name}/: keep one {what} folder")
        by_role[role] = d
    return by_role


def _given(folder: Path, classes: list[str], train_dir: Path) -> dict[str, list[Path]]:
    """The class folders of a validation or test folder, each one a class of ``train/``."""
    found = _scan_classes(folder, None)
    extra = sorted(set(found) - set(classes))
    if extra:
        raise DataError(f"class {extra[0]!r} is in {folder} but not in {train_dir}")
    if not any(found.values()):
        raise DataError(f"no images in {folder}")
    return found


def _scan_split_folders(
    root: Path, splits: dict[str, Path], val_split: float, seed: int
) -> Dataset:
    """``root/train`` with a validation folder (used as given) or without (split), and
    ``root/test`` held out (``splits``: :func:`split_layout`)."""
    train_dir = splits["train"]
    train = _scan_classes(train_dir, None)
    _check_classes(train, train_dir)
    classes = sorted(train)
    val_dir = splits.get("val")
    items: list[Item] = []
    if val_dir is not None:
        val = _given(val_dir, classes, train_dir)
        for subset, found in (("train", train), ("val", val)):
            for c in classes:
                items += [Item(p, classes.index(c), subset) for p in found.get(c, [])]
    else:
        for label, c in enumerate(classes):
            for p, side in stable_split(train[c], train_dir / c, val_split, seed):
                items.append(Item(p, label, side))
    test: list[Item] = []
    test_dir = splits.get("test")
    if test_dir is not None:
        held = _given(test_dir, classes, train_dir)
        test = [Item(p, classes.index(c), "test") for c in classes for p in held.get(c, [])]
    layout = "train/val" if val_dir is not None else "split"
    return Dataset(root, classes, items, layout, test=test, val_dir=val_dir)


def overlap_warnings(ds: Dataset) -> list[str]:
    """Held-out photos that are also training photos (the same file, a link to it, or the
    same bytes): test/ against train and validation, a given validation folder against
    train. Their scores would flatter the model."""
    pairs = []
    if ds.test:
        pairs.append(("test", ds.test, ds.items))
    if ds.layout == "train/val":
        pairs.append(("validation", ds.subset("val"), ds.subset("train")))
    out = []
    for name, held, trained in pairs:
        same = same_photos([it.path for it in held], [it.path for it in trained])
        if same:

            def rel(p: Path) -> str:
                return p.relative_to(ds.root).as_posix() if p.is_relative_to(ds.root) else str(p)

            shown = "; ".join(f"{rel(a)} = {rel(b)}" for a, b in same[:3])
            more = " ..." if len(same) > 3 else ""
            out.append(
                f"{len(same)} {name} photo(s) are also training photos (the same file or the "
                f"same bytes): {shown}{more}; the {name} scores flatter the model: remove "
                "them from one side"
            )
    return out


def same_photos(held: Sequence[Path], trained: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(held, trained) pairs that are one file (links included) or hold the same bytes.
    Files are compared by size first: only photos of one size are read and hashed."""
    ids: dict[tuple[int, int], Path] = {}
    by_size: dict[int, list[Path]] = {}
    for p in trained:
        try:
            st = p.stat()
        except OSError:
            continue  # reported by the decode check
        ids.setdefault((st.st_dev, st.st_ino), p)
        by_size.setdefault(st.st_size, []).append(p)
    digests: dict[Path, str | None] = {}

    def digest(p: Path) -> str | None:
        if p not in digests:
            h = hashlib.sha256()
            try:
                with files.open_regular(p) as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
                digests[p] = h.hexdigest()
            except OSError:
                digests[p] = None
        return digests[p]

    found = []
    for p in held:
        try:
            st = p.stat()
        except OSError:
            continue
        twin = ids.get((st.st_dev, st.st_ino))
        if twin is None and st.st_size in by_size and digest(p) is not None:
            twin = next((t for t in by_size[st.st_size] if digest(t) == digest(p)), None)
        if twin is not None:
            found.append((p, twin))
    return found


def check_usable(ds: Dataset) -> None:
    """After unreadable files are dropped: errors for unusable data, warnings for weak data."""
    totals = [0] * len(ds.classes)
    for it in ds.items:
        totals[it.label] += 1
    for c, n in zip(ds.classes, totals, strict=True):
        if n == 0:
            raise DataError(f"class {c!r} has no readable images (see the skipped files)")
    if not ds.subset("train"):
        raise DataError("no training images left after the split")
    if not ds.subset("val") and ds.layout == "train/val":
        raise DataError(f"no validation images in {ds.val_dir or ds.root / 'val'}")
    ds.warnings.extend(quality_warnings(ds.classes, totals))


def quality_warnings(classes: Sequence[str], totals: Sequence[int]) -> list[str]:
    out = []
    for c, n in zip(classes, totals, strict=True):
        if n < MIN_PER_CLASS:
            out.append(f"class {c!r} has only {n} images; {MIN_PER_CLASS}+ per class train better")
    lo, hi = min(totals), max(totals)
    if lo and hi / lo >= MAX_IMBALANCE:
        big = classes[totals.index(hi)]
        small = classes[totals.index(lo)]
        out.append(
            f"classes are imbalanced {hi / lo:.1f}:1 ({big!r} {hi}, {small!r} {lo}); "
            "consider --class-weight auto"
        )
    return out


def class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse frequency, scaled so a balanced dataset gets 1.0 for every class."""
    total, k = sum(counts), len(counts)
    return [total / (k * n) if n else 0.0 for n in counts]

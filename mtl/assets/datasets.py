"""Known public datasets for the demo, the tests and a first run: found, or downloaded and verified.

Order, as for weights (:mod:`mtl.assets.weights`):

1. a local copy: ``$MTL_DATA_DIR/<name>`` (or the zip's own top folder there,
   e.g. ``hymenoptera_data``; ``make`` points it at ``../shared/data`` when that
   folder is beside the checkout); used as it is, never written to;
2. mtl's cache, ``<cache>/datasets/<name>`` (``$MTL_CACHE_DIR``, else
   ``$XDG_CACHE_HOME/mtl``, else ``~/.cache/mtl``);
3. a download of the zip from its canonical URL (``$MTL_DATASETS_URL``
   replaces the base URL, keeping the file name), verified before anything is
   kept: a complete zip with good CRCs, member names that stay inside the
   folder, the expected splits, classes and counts, and the SHA-256 of every
   pinned photo. It is unpacked into a temp folder inside the cache and renamed
   into place in one step, so the cache holds a verified dataset or nothing.
   The download is bounded (:mod:`mtl.assets.bounded`: a size cap, a deadline
   and a minimum rate, all from the zip's known size) and runs under the cache
   folder's lock, which also clears the temp folders of a killed earlier run.
   A folder at the cache's place that mtl did not write (no marker file) is
   never replaced: the download is refused, naming it.

Nothing here imports TensorFlow or Keras, and nothing prints.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

from mtl.assets import bounded, checksums
from mtl.assets.cache import cache_root
from mtl.errors import DatasetUnavailable, MtlError, UsageError
from mtl.locks import folder_lock

MARKER = ".mtl-dataset.json"  # written last into a verified cache folder
MAX_MEMBER_BYTES = 64 << 20  # no photo in a known dataset comes near this
MAX_TOTAL_BYTES = 2 << 30

DownloadProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class KnownDataset:
    """A zip of folder-per-class photos: ``<top>/<split>/<class>/<file>``."""

    name: str
    title: str
    url: str
    top: str  # the zip's top folder
    classes: tuple[str, ...]
    counts: Mapping[str, int]  # split -> number of files expected
    zip_bytes: int  # the zip's size: its download's cap, deadline and rate come from it
    pins: str | None = None  # package file: "<sha256>  <split>/<class>/<file>" lines
    source: str = ""

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def pinned(self) -> dict[str, str]:
        """Relative path (``train/ants/x.jpg``) -> SHA-256, for every pinned file."""
        if not self.pins:
            return {}
        text = resources.files("mtl.assets").joinpath(self.pins).read_text(encoding="utf-8")
        pins = {}
        for line in text.splitlines():
            if line.strip():
                digest, rel = line.split(maxsplit=1)
                pins[rel] = digest
        return pins


HYMENOPTERA = KnownDataset(
    name="hymenoptera",
    title="ants and bees, the PyTorch transfer-learning tutorial's set",
    url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    top="hymenoptera_data",
    classes=("ants", "bees"),
    # The 245 training photos are pinned one by one (computed from
    # ../shared/data/hymenoptera/train); the 153 validation photos are not
    # available here to pin, so only their number is checked.
    counts={"train": 245, "val": 153},
    zip_bytes=47_286_322,
    pins="hymenoptera_train.sha256",
    source="https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html",
)

KNOWN: dict[str, KnownDataset] = {d.name: d for d in (HYMENOPTERA,)}


@dataclass(frozen=True)
class Located:
    """Where a dataset is: ``path`` holds one folder per split (``train/``, maybe ``val/``)."""

    dataset: KnownDataset
    path: Path
    source: str  # "local", "cache" or "download"
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> files

    def to_json(self) -> dict[str, object]:
        return {
            "dataset": self.dataset.name,
            "path": str(self.path),
            "source": self.source,
            "splits": self.splits,
        }


def get(name: str) -> KnownDataset:
    try:
        return KNOWN[name]
    except KeyError:
        known = ", ".join(sorted(KNOWN))
        raise UsageError(f"unknown dataset {name!r}; known: {known}") from None


def cache_dir() -> Path:
    return cache_root() / "datasets"


def url_for(dataset: KnownDataset) -> str:
    base = os.environ.get("MTL_DATASETS_URL")
    return base.rstrip("/") + "/" + dataset.file_name if base else dataset.url


def local_dirs() -> list[Path]:
    """Folders that may already hold datasets by name: ``$MTL_DATA_DIR`` (``make`` sets it
    to ``../shared/data`` when that is beside the checkout)."""
    folder = os.environ.get("MTL_DATA_DIR")
    return [Path(folder)] if folder else []


def count(folder: Path, dataset: KnownDataset) -> dict[str, dict[str, int]]:
    """split -> class -> number of files, for the splits present under ``folder``."""
    splits: dict[str, dict[str, int]] = {}
    for split in dataset.counts:
        if (folder / split).is_dir():
            splits[split] = {
                c: sum(1 for f in (folder / split / c).iterdir() if f.is_file())
                if (folder / split / c).is_dir()
                else 0
                for c in dataset.classes
            }
    return splits


def _usable(folder: Path, dataset: KnownDataset) -> bool:
    return all((folder / "train" / c).is_dir() for c in dataset.classes)


def find(dataset: KnownDataset) -> Located | None:
    """The dataset already on this machine (local copy or cache), or None."""
    for base in local_dirs():
        for folder in (base / dataset.name, base / dataset.top):
            if _usable(folder, dataset):
                return Located(dataset, folder, "local", count(folder, dataset))
    cached = cache_dir() / dataset.name
    if (cached / MARKER).is_file() and _usable(cached, dataset):
        return Located(dataset, cached, "cache", count(cached, dataset))
    return None


def resolve(
    name: str, *, download: bool = True, progress: DownloadProgress | None = None
) -> Located:
    """Return where dataset ``name`` is, downloading and verifying it into the cache if needed."""
    dataset = get(name)
    found = find(dataset)
    if found is not None:
        return found
    url = url_for(dataset)
    target = cache_dir() / dataset.name
    where = (
        f"unzip it into a folder and set MTL_DATA_DIR to that folder (it must hold "
        f"{dataset.top}/ or {dataset.name}/ with train/{{{','.join(dataset.classes)}}})"
    )
    if not download:
        raise DatasetUnavailable(f"missing dataset {name}; download {url}, {where}")
    _refuse_foreign(target, dataset)
    with bounded.signals_unwind(), folder_lock(target.parent, "fetch --dataset", wait=True):
        found = find(dataset)  # another process may have finished it while we waited
        if found is not None:
            return found
        _refuse_foreign(target, dataset)
        _clear_stale(target.parent, dataset.name)
        _download_into_cache(dataset, url, target, where, progress)
    return Located(dataset, target, "download", count(target, dataset))


def _refuse_foreign(target: Path, dataset: KnownDataset) -> None:
    """A folder at the cache's place without mtl's marker holds someone's files (a copy
    unzipped by hand, notes): never replace it."""
    if (target.exists() or target.is_symlink()) and not (
        target.is_dir() and not target.is_symlink() and (target / MARKER).is_file()
    ):
        raise DatasetUnavailable(
            f"{target} exists but was not written by mtl (no {MARKER}); move it away to "
            f"download {dataset.name} again, or set MTL_DATA_DIR to the folder holding it"
        )


def _clear_stale(parent: Path, name: str) -> None:
    """Temp folders of a run that was killed (SIGKILL, power loss); safe under the lock."""
    for stale in parent.glob(f".{name}.*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _download_into_cache(
    dataset: KnownDataset, url: str, target: Path, where: str, progress: DownloadProgress | None
) -> None:
    name = dataset.name
    work = _work_dir(target.parent, name, DatasetUnavailable, "the dataset cache ")
    try:
        archive = work / dataset.file_name
        try:
            _download(url, archive, dataset, progress)
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
            reason = checksums.download_failure(exc)
            raise DatasetUnavailable(
                f"missing dataset {name} and cannot download it from {url} ({reason}); "
                f"download it by hand, {where}"
            ) from None
        unpacked = work / name
        try:
            splits = unpack(archive, unpacked, dataset)
        except (ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetUnavailable(
                f"refused the download of {name} from {url}: {exc}; nothing was kept"
            ) from None
        except OSError as exc:
            raise DatasetUnavailable(f"cannot unpack {name} into {target.parent}: {exc}") from None
        archive.unlink()
        _write_marker(unpacked, dataset, url, splits)
        if target.is_dir() and not target.is_symlink() and (target / MARKER).is_file():
            os.replace(target, work / "replaced")  # ours, but unusable: find() passed it by
        try:
            os.replace(unpacked, target)
        except OSError as exc:
            raise DatasetUnavailable(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _work_dir(parent: Path, name: str, error: type[MtlError], what: str) -> Path:
    """A temp folder beside the final one (same file system: the rename is atomic)."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}."))
    except OSError as exc:
        raise error(f"cannot write {what}{parent}: {exc}") from None


def _download(
    url: str, target: Path, dataset: KnownDataset, progress: DownloadProgress | None
) -> None:
    with open(target, "wb") as fh:
        bounded.download(
            url, fh, dataset.file_name, bounded.limits_for(dataset.zip_bytes), progress
        )


def _member_path(name: str) -> PurePosixPath:
    """A zip member's name as a relative path; refuse one that could leave the folder."""
    if "\\" in name or name.startswith("/") or ":" in name.split("/", 1)[0]:
        raise ValueError(f"unsafe member name {name!r} in the zip")
    path = PurePosixPath(name)
    if any(part in ("..", "") for part in path.parts) or not path.parts:
        raise ValueError(f"unsafe member name {name!r} in the zip")
    return path


def unpack(archive: Path, out: Path, dataset: KnownDataset) -> dict[str, dict[str, int]]:
    """Verify ``archive`` and write its photos to ``out/<split>/<class>/``; return the counts.

    Raises ``ValueError`` (or ``zipfile.BadZipFile``) with the reason when anything is off;
    ``out`` is then left for the caller to delete.
    """
    pins = dataset.pinned()
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # every name is checked, even those not extracted
            _member_path(info.filename)
        if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
            raise ValueError("the zip unpacks to more than expected")
        bad = zf.testzip()
        if bad is not None:
            raise ValueError(f"bad CRC for {bad} in the zip")
        wanted = []
        for info in infos:
            parts = _member_path(info.filename).parts
            if info.is_dir() or len(parts) != 4 or parts[0] != dataset.top:
                continue
            _, split, cls, file = parts
            if split in dataset.counts and cls in dataset.classes and not file.startswith("."):
                wanted.append((info, f"{split}/{cls}/{file}"))
        counts: dict[str, dict[str, int]] = {
            s: dict.fromkeys(dataset.classes, 0) for s in dataset.counts
        }
        mismatched = []
        for info, rel in wanted:
            if info.file_size > MAX_MEMBER_BYTES:
                raise ValueError(f"{rel} is larger than any photo should be")
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with zf.open(info) as src, open(dest, "xb") as dst:  # the zip reader checks the CRC
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
            split, cls, _ = rel.split("/", 2)
            counts[split][cls] += 1
            if rel in pins and pins[rel] != digest.hexdigest():
                mismatched.append(rel)
    if mismatched:
        more = f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""
        raise ValueError(f"SHA-256 mismatch for {mismatched[0]}{more}")
    missing = sorted(set(pins) - {rel for _, rel in wanted})
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"the zip lacks {dataset.top}/{missing[0]}{more}")
    for split, expected in dataset.counts.items():
        got = sum(counts[split].values())
        if got != expected or not all(counts[split].values()):
            per_class = ", ".join(f"{n} {c}" for c, n in counts[split].items())
            raise ValueError(
                f"expected {expected} {split} photos in {dataset.top}/{split}/, found {got} "
                f"({per_class})"
            )
    return counts


def _write_marker(
    folder: Path, dataset: KnownDataset, url: str, splits: Mapping[str, Mapping[str, int]]
) -> None:
    info = {
        "dataset": dataset.name,
        "url": url,
        "splits": splits,
        "verified": "zip CRCs, layout, counts; SHA-256 of every pinned file"
        if dataset.pins
        else "zip CRCs, layout, counts",
    }
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Placed:
    """A dataset copied for the user: ``path`` (``<out>/<name>``), ``copied`` False if there."""

    located: Located
    path: Path
    copied: bool

    def to_json(self) -> dict[str, object]:
        return {
            "dataset": self.located.dataset.name,
            "path": str(self.path),
            "copied": self.copied,
            "from": str(self.located.path),
            "source": self.located.source,
            "splits": count(self.path, self.located.dataset),
        }


def place(located: Located, out: str | os.PathLike[str]) -> Placed:
    """Copy the dataset to ``out/<name>`` (atomically); keep a complete copy already there."""
    dataset = located.dataset
    target = Path(out) / dataset.name
    if target.exists():
        if count(target, dataset) == located.splits:
            return Placed(located, target, copied=False)
        raise UsageError(
            f"{target} already exists and is not a complete copy of {dataset.name}; "
            "remove it or choose another --out"
        )
    with bounded.signals_unwind():
        work = _work_dir(target.parent, dataset.name, UsageError, "to ")
        try:
            for split in located.splits:
                shutil.copytree(located.path / split, work / dataset.name / split)
            os.replace(work / dataset.name, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Placed(located, target, copied=True)

"""Finding pretrained weights and the ImageNet class index by Keras' own file names.

Order: ``--weights-dir`` / ``MTL_WEIGHTS_DIR``, then the Keras cache
(``$KERAS_HOME/models``, default ``~/.keras/models``), then a download from
Keras' canonical URL into that cache. A weights folder may be read-only, so
nothing is ever written there. A download is bounded by the file's expected size
(:mod:`mtl.assets.bounded`), runs under the cache folder's lock (which clears the
``.part`` files of a killed earlier run), and its content is checked before it is
kept (:func:`mtl.assets.checksums.check_weights_file`: the layer names and shapes
a MobileNet file must hold, the class index's SHA-256).
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mtl.assets import bounded, checksums
from mtl.errors import WeightsUnavailable
from mtl.locks import folder_lock

CLASS_INDEX_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
)

DownloadProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class RemoteFile:
    """A file Keras knows by ``name`` and downloads from ``url``."""

    name: str
    url: str


def keras_cache_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _url_for(remote: RemoteFile) -> str:
    # Lets tests (and mirrors) serve the files from elsewhere, keeping Keras' names.
    base = os.environ.get("MTL_WEIGHTS_URL")
    return base.rstrip("/") + "/" + remote.name if base else remote.url


def resolve(
    remote: RemoteFile,
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: DownloadProgress | None = None,
) -> Path:
    """Return a local path to ``remote``, downloading it into the Keras cache if needed."""
    folder = weights_dir or os.environ.get("MTL_WEIGHTS_DIR")
    candidates = [Path(folder) / remote.name] if folder else []
    candidates.append(keras_cache_dir() / remote.name)
    url = _url_for(remote)
    for path in candidates:
        if path.is_file() and path.stat().st_size > 0:
            _check_found(remote, path, url, in_cache=path.parent == keras_cache_dir())
            return path
    target = keras_cache_dir() / remote.name
    where = (
        f"{folder} (--weights-dir / MTL_WEIGHTS_DIR) or {target.parent}"
        if folder
        else (f"{target.parent} (or a folder named by --weights-dir / MTL_WEIGHTS_DIR)")
    )
    if not download:
        raise WeightsUnavailable(f"missing {remote.name}; download {url} and put it in {where}")
    try:
        with bounded.signals_unwind(), folder_lock(target.parent, "weights download", wait=True):
            if target.is_file() and target.stat().st_size > 0:  # another process got it
                _check_found(remote, target, url, in_cache=True)
                return target
            for stale in target.parent.glob(f".{remote.name}.*.part"):
                stale.unlink(missing_ok=True)  # a killed download's; no one else writes now
            _download(url, target, remote.name, progress)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        reason = checksums.download_failure(exc)
        raise WeightsUnavailable(
            f"missing {remote.name} and cannot download it from {url} ({reason}); "
            f"download it by hand and put it in {where}"
        ) from None
    return target


def _check_found(remote: RemoteFile, path: Path, url: str, *, in_cache: bool) -> None:
    """An ``.h5`` found on disk must be whole Keras weights of the right layout before
    Keras opens it (Keras' own errors, "file signature not found", "Layer count
    mismatch", name no file). The class index is left to its reader, which names the
    file itself."""
    if not remote.name.endswith(".h5"):
        return
    why = checksums.hdf5_problem(path) or checksums.keras_layout_problem(remote.name, path)
    if why:
        fix = "delete it and mtl downloads it again" if in_cache else f"replace it with {url}"
        raise WeightsUnavailable(f"{path} is not usable weights ({why}); {fix}")


def _download(url: str, target: Path, name: str, progress: DownloadProgress | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    limits = bounded.limits_for(checksums.expected_size(name))
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            bounded.download(url, fh, name, limits, progress)
        checksums.check_weights_file(name, tmp)  # a bad file is never kept
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def class_index_file() -> RemoteFile:
    return RemoteFile("imagenet_class_index.json", CLASS_INDEX_URL)

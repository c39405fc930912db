"""``--urls FILE``: one URL a line, or ``label<TAB>url``; ``#`` comments and blanks skipped."""

from __future__ import annotations

from pathlib import Path

from mtl.errors import UsageError


def read_url_list(path: Path, keywords: list[str]) -> list[tuple[str, str]]:
    """(label, url) pairs in file order. Unlabelled lines go to the one KEYWORD given."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read --urls {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read --urls {path}: not UTF-8 text") from None
    pairs: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        label, _, url = raw.rpartition("\t")
        label, url = label.strip(), url.strip()
        if not label:
            if len(keywords) != 1:
                raise UsageError(
                    f"{path}:{number} has no label; write label<TAB>url, "
                    "or give exactly one KEYWORD to file unlabelled URLs under"
                )
            label = keywords[0]
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"{path}:{number}: not an http(s) URL: {url[:80]!r}")
        pairs.append((label, url))
    if not pairs:
        raise UsageError(f"--urls {path} lists no URLs")
    return pairs

"""Which kept image, in any class, a new one duplicates: same bytes or the same picture.

The perceptual hash catches the same photo re-encoded, resized or re-saved
as PNG; distinct photos sit 18+ bits apart on real data, re-encodings 0-2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NEAR_DISTANCE = 6


@dataclass(frozen=True)
class Entry:
    """One kept image as the index knows it."""

    slug: str
    file: str
    sha256: str
    phash: str


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass
class HashIndex:
    """Every kept image of every class, plus the images refused as ambiguous."""

    entries: dict[str, Entry] = field(default_factory=dict)  # by file
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (sha256, phash)

    def add(self, entry: Entry) -> None:
        self.entries[entry.file] = entry

    def remove(self, file: str) -> None:
        self.entries.pop(file, None)

    def block(self, sha256: str, phash: str) -> None:
        self.blocked.append((sha256, phash))

    def is_blocked(self, sha256: str, phash: str) -> bool:
        return any(_same(sha256, phash, s, p) for s, p in self.blocked)

    def matches(self, sha256: str, phash: str) -> list[Entry]:
        """Kept images that are this one, sorted by file."""
        found = [e for e in self.entries.values() if _same(sha256, phash, e.sha256, e.phash)]
        return sorted(found, key=lambda e: e.file)


def _same(sha_a: str, phash_a: str, sha_b: str, phash_b: str) -> bool:
    return sha_a == sha_b or distance(phash_a, phash_b) <= NEAR_DISTANCE

"""Why a download was not kept: the names the table, the JSON and the tests share."""

from __future__ import annotations

from typing import Literal, get_args

Reason = Literal[
    "not_image",
    "truncated",
    "too_small",
    "too_large",
    "http_error",
    "timeout",
    "duplicate",
    "ambiguous",
    "set_aside",  # a picture `mtl review --apply` set aside: never fetched again
]

# Display order in the table and key order in JSON: the order of the Literal above.
REASONS: tuple[Reason, ...] = get_args(Reason)


class Rejected(Exception):
    """A candidate image that is dropped; carries the reason it is counted under."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason: Reason = reason
        self.detail = detail or reason

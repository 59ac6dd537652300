"""`nerft export` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "export"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft export is not implemented yet")

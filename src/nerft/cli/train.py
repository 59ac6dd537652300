"""`nerft train` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "train"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft train is not implemented yet")

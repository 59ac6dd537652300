"""`nerft predict` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "predict"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft predict is not implemented yet")

"""`nerft eval` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "eval"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft eval is not implemented yet")

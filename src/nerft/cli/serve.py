"""`nerft serve` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "serve"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft serve is not implemented yet")

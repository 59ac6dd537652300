"""`nerft doctor` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "doctor"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft doctor is not implemented yet")

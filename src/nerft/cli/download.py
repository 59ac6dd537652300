"""`nerft download` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "download"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft download is not implemented yet")

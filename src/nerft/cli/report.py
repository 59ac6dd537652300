"""`nerft report` (not implemented yet)."""

from __future__ import annotations

from nerft.errors import NerftError

NAME = "report"


def command() -> None:
    """Not implemented yet."""
    raise NerftError("nerft report is not implemented yet")

"""nerft's own exception types.

Every error a user can cause (bad data, bad config, a missing model, an unreachable server) is a
`NerftError`. The CLI turns it into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any


class NerftError(Exception):
    """An error the user can fix. `hint` names the next thing to try."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class DataError(NerftError):
    """Input data that cannot be read or does not validate."""


class ConfigError(NerftError):
    """A nerft config that does not validate."""


class ModelError(NerftError):
    """A model, adapter or run folder that is missing or unusable."""


class ServerError(NerftError):
    """A server that does not answer, or answers with an error."""


class EnvironmentProblem(NerftError):
    """A missing program or a broken installation."""


def validation_problem(error: Mapping[str, Any], *, loc: tuple[str, ...] | None = None) -> str:
    """One pydantic validation error as `field.path: message`, in nerft's words where pydantic's
    are vague: the one formatter of them (configs, run manifests). `loc` overrides the error's own."""
    loc = tuple(str(part) for part in (error["loc"] if loc is None else loc))
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        message = "missing (required)"
    elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown key"
    else:
        message = message.removeprefix("Value error, ")
        if "input" in error and not isinstance(error["input"], (dict, list)):
            got = repr(error["input"])
            message += f" (got {got if len(got) <= 80 else got[:76] + ' ...'})"  # a megabyte value stays one short line
    return f"{'.'.join(loc)}: {message}" if loc else message


# Faults of the machine, not of nerft: each is one `PATH: reason` line, whatever command met it.
# Any other OSError is unexpected and keeps its traceback.
ENVIRONMENT_FAULTS = {
    errno.ENOENT: "no such file or folder",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EEXIST: "already exists",
}


def environment_fault(exc: BaseException) -> str | None:
    """`PATH: reason` for an `OSError` the machine caused (full disk, read-only or forbidden
    folder, a path through a file, a name too long), else None."""
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_FAULTS:
        return None
    reason = ENVIRONMENT_FAULTS[exc.errno]
    if exc.filename is None:
        return reason
    return f"{exc.filename}: {reason}"

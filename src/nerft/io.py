"""File writing that never leaves a half-written file behind, and locks for shared files.

- `atomic_writer` and `write_*_atomic`: a temporary file beside the target, renamed over it only
  when complete (a reader sees the old file or the new one, never a part).
- `locked(path)`: an inter-process lock (`filelock`) on `.<name>.lock` beside a shared file, held
  around every read-merge-write of it (`update_json`), so concurrent nerft processes never lose
  each other's entries.
- `sole_writer(*paths)`: the one writer of output files: `.<name>.lock` beside each, taken at
  once or refused at once in one line naming the lock and the process holding it.
- `written_together(*paths)`: output files written side by side (a report and its pages), staged
  under their writer's lock and renamed into place only when all are complete.
- `staging_dir(target)`: a fresh, unique temporary folder beside `target` for a build;
  `replace_dir(staging, target)` swaps it in so that `target` is never missing.
- `refuse_collisions(inputs, outputs)`: an output that is an input, refused before any work.
- `read_json(path)` and `json_line(...)`: the one JSON reader of every file nerft reads, and
  `read_yaml(path)` the one YAML reader; whatever is wrong with the file ends in one
  `FILE[:LINE]: reason` error of the caller's type.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from nerft.errors import DataError, NerftError


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, encoding: str = "utf-8", binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    The rename is atomic on POSIX, so a reader sees either the old file or the complete new one,
    and an interrupted run leaves the old file untouched. `binary=True` opens it for bytes (images).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # named by the file meant, not by the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding=encoding, newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise named(exc, path) from exc.__cause__
        raise


def named(exc: OSError, path: str | os.PathLike) -> OSError:
    """`exc` naming `path` when it names no file (a full disk reported by a write or a flush), so
    that its one-line message says which file could not be written."""
    if exc.errno is None or exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


@contextlib.contextmanager
def naming_os_errors(path: str | os.PathLike) -> Iterator[None]:
    """Writes to `path` inside the block: an `OSError` naming no file names `path` (`named`)."""
    try:
        yield
    except OSError as exc:
        raise named(exc, path) from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_writer(path) as handle:
        handle.write(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path, binary=True) as handle:
        handle.write(data)


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> None:
    with atomic_writer(path) as handle:
        json.dump(data, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")


def json_row(row: Any) -> str:
    """One line of a JSON Lines file (Chinese kept readable), with its newline."""
    return json.dumps(row, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def jsonl_writer(path: str | os.PathLike) -> Iterator[Callable[[Any], None]]:
    """A function writing one row a line to `path` as rows come, the file renamed into place only
    when the block succeeds (`atomic_writer`): a failed run leaves the old file as it was."""
    with atomic_writer(path) as handle:
        yield lambda row: handle.write(json_row(row))


def write_jsonl_atomic(path: str | os.PathLike, rows) -> int:
    """Write an iterable of JSON-serialisable rows, one a line; return how many were written."""
    count = 0
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(json_row(row))
            count += 1
    return count


TOO_MANY_DIGITS = f"a number of more than {sys.get_int_max_str_digits():,} digits"
_TYPE_NAMES = {dict: "a JSON object", list: "a JSON list", str: "a string"}


def read_json(
    path: str | os.PathLike,
    *,
    expect: type | tuple[type, ...] = dict,
    error: type | None = None,
    what: str = "",
    hint: str | None = None,
) -> Any:
    """The JSON value in `path`, which must be of type `expect`, or an `error` (default `DataError`)
    naming the file, the line and the reason. `what` names the file in the message ("run manifest")."""

    error = error or DataError
    path = Path(path)
    text = read_text(path, error=error, what=what, hint=hint)
    return json_line(text, f"{path}", None, expect=expect, error=error, what=what, hint=hint)


def read_yaml(
    path: str | os.PathLike, *, error: type | None = None, mapping: str = "a mapping"
) -> tuple[dict, dict[tuple, int]]:
    """The YAML mapping in `path` and the line of every key path in it (for error messages): the one
    YAML reader. Whatever is wrong ends in one `FILE[:LINE]: reason` `error` (default `DataError`);
    `mapping` says what the file should hold."""
    import yaml

    error = error or DataError
    path = Path(path)
    text = read_text(path, error=error)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters here
        node = loader.get_single_node()
        if node is not None and _expanded_size(node) > MAX_YAML_VALUES:
            raise error(
                f"{path}: the YAML expands to more than {MAX_YAML_VALUES:,} values through its aliases (&name/*name); "
                "a nerft config holds a few dozen"
            )
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:
        raise error(f"{path}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        if isinstance(exc, yaml.reader.ReaderError):  # a control character, found by its position
            line = f":{text.count(chr(10), 0, exc.position) + 1}"
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}{line}: broken YAML ({reason})") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected {mapping}, got {type(data).__name__}")
    lines: dict[tuple, int] = {}

    def walk(current, prefix: tuple) -> None:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                loc = (*prefix, str(key_node.value))
                lines[loc] = key_node.start_mark.line + 1
                walk(value_node, loc)

    walk(node, ())
    return data, lines


# A YAML document that expands, through its aliases, to more values than this is refused before it
# is walked: a 325-byte "billion laughs" of nested aliases would otherwise expand to gigabytes.
MAX_YAML_VALUES = 100_000


def _expanded_size(node) -> int:
    """How many values a composed YAML node stands for once every alias is expanded, counted
    without expanding them (an alias is the same node object as its anchor: counted once each)."""
    sizes: dict[int, int] = {}

    def size(current) -> int:
        known = sizes.get(id(current))
        if known is not None:
            return known
        total = 1
        if isinstance(current.value, list):
            for item in current.value:
                for child in item if isinstance(item, tuple) else (item,):
                    total += size(child)
                    if total > MAX_YAML_VALUES:
                        break
        sizes[id(current)] = total
        return total

    return size(node)


def read_text(path: str | os.PathLike, *, error: type | None = None, what: str = "", hint: str | None = None) -> str:
    """A UTF-8 text file (a byte-order mark allowed), or one `FILE[:LINE]: reason` error."""

    error = error or DataError
    path = Path(path)
    label = f" ({what})" if what else ""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file{label}", hint=hint) from None
    except OSError as exc:
        raise error(f"{path}: cannot read{label} ({exc.strerror})", hint=hint) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text{label} (byte {exc.start})", hint=hint) from None


def json_line(
    text: str,
    source: str,
    lineno: int | None,
    *,
    expect: type | tuple[type, ...] = dict,
    error: type | None = None,
    what: str = "",
    hint: str | None = None,
) -> Any:
    """Decode one JSON document (a whole file, or line `lineno` of a JSON Lines file) the way
    `read_json` does: a value of type `expect`, else one `source:line: reason` error."""

    error = error or DataError
    label = f" ({what})" if what else ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        line = lineno if lineno is not None else exc.lineno
        raise error(f"{source}:{line}: broken JSON{label} ({exc.msg}, column {exc.colno})", hint=hint) from None
    except RecursionError:
        raise error(f"{source}:{lineno or 1}: JSON nested too deeply{label}", hint=hint) from None
    except ValueError:  # Python's bound on the digits of an integer (sys.get_int_max_str_digits)
        raise error(f"{source}:{lineno or 1}: {TOO_MANY_DIGITS}{label}", hint=hint) from None
    expected = expect if isinstance(expect, tuple) else (expect,)
    if not isinstance(value, expected) or (bool not in expected and isinstance(value, bool) and int in expected):
        wanted = " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in expected)
        where = f"{source}:{lineno}" if lineno is not None else source
        raise error(f"{where}: expected {wanted}{label}, found {_json_type(value)}", hint=hint)
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


LOCK_TIMEOUT = 600.0  # seconds to wait for another nerft process to release a shared file


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the inter-process lock of the shared file `path` (`.<name>.lock` beside it).

    The lock file is never deleted (deleting it would let a waiting process lock a file another
    one is about to create); the kernel releases the lock when its holder dies, even by SIGKILL.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(f".{path.name}.lock")), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise NerftError(
            f"{path}: still locked by another nerft process after {timeout:.0f} s",
            hint=f"if none is running, delete {lock.lock_file}",
        ) from None
    try:
        yield
    finally:
        lock.release()


_held_writers: dict[str, list] = {}  # lock file -> [its open descriptor, how often held]: re-entrant


@contextlib.contextmanager
def sole_writer(*paths: str | os.PathLike | None) -> Iterator[None]:
    """Be the one writer of the output files `paths` (None skipped) for the block: each has its
    lock `.<name>.lock` beside it while it is written (the resumable `<name>.partial` of
    predictions is covered by its file's lock). A lock another process holds is refused at once,
    not waited for, with one `NerftError` naming the lock and the holder's process id: two writers
    of one file would interleave rows or leave pages of two runs side by side. Re-entrant within
    a process.

    The holder writes its pid into the lock file and deletes it when done (first, still holding
    the lock: a process that opened the old file meanwhile finds it gone and takes a new one). The
    kernel drops the lock of a holder that dies, even by SIGKILL: its file stays, free to take.
    """
    taken: list[str] = []
    try:
        for path in sorted({os.path.realpath(os.fspath(path)) for path in paths if path is not None}):
            lock_file = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
            if lock_file in _held_writers:
                _held_writers[lock_file][1] += 1
            else:
                _held_writers[lock_file] = [_take_writer_lock(path, lock_file), 1]
            taken.append(lock_file)
        yield
    finally:
        for lock_file in reversed(taken):
            held = _held_writers[lock_file]
            held[1] -= 1
            if held[1] == 0:
                del _held_writers[lock_file]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_file)
                os.close(held[0])  # releases the lock


def _take_writer_lock(path: str, lock_file: str) -> int:
    """The open, locked descriptor of `lock_file`, or the `NerftError` of `sole_writer`."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's pid is read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").split()
            os.close(fd)
            who = f"process {holder[0]}" if holder and holder[0].isdigit() else "another process"
            raise NerftError(
                f"{path}: {who} is writing it (it holds {lock_file})",
                hint="wait for it to finish, or write to another path",
            ) from None
        try:
            current = os.stat(lock_file).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # its holder deleted it after this process opened it: take a new one


@contextlib.contextmanager
def written_together(*paths: str | os.PathLike | None) -> Iterator[Callable[[str | os.PathLike], Path]]:
    """Write output files that belong together (a report, its pages and charts) so that they never
    disagree: the block writes each through `stage(path)`, its place in a staging folder beside
    it (`.<name>.XXXX.partial`, one per folder; files the writers add there, such as charts,
    belong too); when the block succeeds every staged file is renamed over its target, else none
    is and the staging folders are removed. `sole_writer` holds every path for the whole block,
    so no other nerft process writes them meanwhile.

    The outputs are files in the user's folder, not one folder that could be swapped in one
    rename: they are renamed one after another, each rename atomic, after all of them are
    complete. Nothing is written between the renames; only a kill within those microseconds
    leaves some files of the new run beside some of the old, never a half-written file.
    """
    targets = [Path(path) for path in paths if path is not None]
    with sole_writer(*targets):
        staging: dict[Path, Path] = {}

        def stage(path: str | os.PathLike) -> Path:
            path = Path(path)
            folder = path.parent.resolve()
            if folder not in staging:
                staging[folder] = staging_dir(folder / f"{path.name}")
            return staging[folder] / path.name

        def target_of(exc: OSError) -> OSError:
            """`exc` naming the output a user asked for, not its staged copy."""
            filename = Path(exc.filename) if isinstance(exc.filename, str) else None
            for folder, staged in staging.items():
                if filename is not None and filename.parent == staged:
                    return OSError(exc.errno, exc.strerror, str(folder / filename.name))
            return exc

        try:
            try:
                yield stage
            except OSError as exc:
                raise target_of(exc) from None
            moves = [
                (item, folder / item.name) for folder, staged in staging.items() for item in sorted(staged.iterdir())
            ]
            for _, target in moves:  # a rename that would fail is refused before any is done
                if target.is_dir() and not target.is_symlink():
                    raise NerftError(f"{target}: is a folder, not a file", hint="give another output path")
            for item, target in moves:
                os.replace(item, target)
        finally:
            for staged in staging.values():
                _remove(staged)


def update_json(path: str | os.PathLike, change, *, read) -> Any:
    """Read-merge-write a shared JSON file under its lock: `change(read(path))` is written back
    atomically (unless it returns the value unchanged and the file exists); returns it."""
    path = Path(path)
    with locked(path):
        current = read(path)
        updated = change(current)
        if updated != current or not path.exists():
            write_json_atomic(path, updated)
        return updated


def staging_dir(target: str | os.PathLike) -> Path:
    """A new, empty folder beside `target` that no other process uses (`.<name>.XXXX.partial`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))


def replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete folder `staging` at `target`, removing what was there (folder or file).

    `target` is never missing: on Linux the two are exchanged in one atomic `renameat2` call, then
    the old one (now at `staging`) is deleted; so a reader sees the old folder or the new one.
    Where the exchange is not available, the old one is renamed aside first and a reader may find
    nothing at `target` between two renames (never a part of either).
    """
    import shutil

    staging, target = Path(staging), Path(target)
    if not (target.exists() or target.is_symlink()):
        try:
            os.rename(staging, target)
            return
        except OSError:  # another process put one there first: exchange with it below
            if not (target.exists() or target.is_symlink()):
                raise
    if _exchange(staging, target):
        _remove(staging)  # the old one, swapped out
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rename(target, aside / target.name)
    os.rename(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`); False where unsupported."""
    import ctypes
    import ctypes.util
    import errno
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # a filesystem or kernel without the exchange
    raise OSError(code, os.strerror(code), str(second))


def refuse_collisions(
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    *,
    replaced_folders: dict[str, Any] | None = None,
    hint: str | None = None,
) -> None:
    """A `ConfigError` when an output path is an input path or another output's path (resolved,
    through links), or cannot be a file (a folder is there, or a file where a folder should be):
    checked before any work, so nothing is written. Keys name the options ("--gold"), values are
    paths or None (not given). `replaced_folders` are output folders that are deleted and replaced
    whole (`export --out`, `train --force`): an input in one, or the folder itself, is refused too.
    `hint` says what to change (default: give the output another path)."""
    from nerft.errors import ConfigError

    def resolved(path) -> str:
        return os.path.realpath(os.fspath(path))

    for name, folder in (replaced_folders or {}).items():
        if folder is None:
            continue
        for other, path in inputs.items():
            if path is not None and Path(resolved(path)).is_relative_to(resolved(folder)):
                raise ConfigError(
                    f"{name} {folder} holds the input {other} {path}: nerft would delete it",
                    hint=hint or f"give {name} another path",
                )
    seen = {resolved(path): name for name, path in inputs.items() if path is not None}
    kinds = {resolved(path): "input" for path in seen}
    for name, path in outputs.items():
        if path is None:
            continue
        if (problem := _not_a_file_path(Path(path))) is not None:
            raise ConfigError(f"{name} {path}: {problem}", hint=hint or f"give {name} a file path")
        where = resolved(path)
        if where in seen:
            other = seen[where]
            role = "the input" if kinds[where] == "input" else "the output"
            raise ConfigError(
                f"{name} {path} is {role} {other}: nerft would overwrite it", hint=hint or f"give {name} another path"
            )
        seen[where], kinds[where] = name, "output"


def _not_a_file_path(path: Path) -> str | None:
    """Why no file can be written at `path`, when the folders say so already; else None."""
    if path.is_dir():
        return "is a folder, not a file"
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, not a folder"
    return None

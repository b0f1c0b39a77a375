"""Every file `nmt` writes for a user goes through `output_file`, so that no failure,
signal or second process ever leaves a file half-written or destroys what was there.

- A regular file (or a new one) is written to a temporary file beside it with a name of
  its own (`.NAME.<random>.tmp`, created exclusively: two processes writing one output
  never share it), flushed to disk and renamed over the target only when complete. The
  temporary file is removed on every other way out: an error, Ctrl-C, SIGTERM (which
  `nmt.interrupts` makes raise like Ctrl-C). Two writers of one output: the last rename
  wins, and the file is one writer's complete result.
- Anything else that can be opened for writing (a terminal, a pipe, /dev/null) is
  written through; a directory is refused. `-` is stdout, named `<stdout>` in errors.
- A name ending in `.gz` is written gzip-compressed.
- An output may never be a file the command reads (`check_output`'s `reads`: the same
  file under any name, through symbolic and hard links).

Every failure is an `OutputError` naming the output; a reader that went away (a closed
pipe: `nmt translate ... | head -1`) is `OutputClosed`, which ends a command quietly.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from nmt.errors import NmtError

STDOUT = "-"
# the temporary files this process has created and not yet renamed or removed: the
# ones a signal at an unlucky moment could leave behind (`remove_temporaries`)
_PENDING: set[Path] = set()


class OutputError(NmtError):
    """An output that cannot be written, or that would overwrite an input."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


class OutputClosed(Exception):
    """The reader of an output went away (a closed pipe): nothing more to write."""


def check_output(path: Path | str, reads: Iterable[Path] = ()) -> None:
    """Refuses, before any work, an output that is a directory, sits in a missing
    directory or is one of the files the command `reads` (the same file under any name).
    `-` (stdout) is always fine."""
    if str(path) == STDOUT:
        return
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, "it is a directory")
    if not path.parent.is_dir():
        why = "does not exist" if not path.parent.exists() else "is not a directory"
        raise OutputError(path, f"{path.parent} {why}")
    target = _identity(path)
    if target is None:
        return
    for source in reads:
        if _identity(source) == target:
            same = "" if Path(source) == path else f" ({source})"
            raise OutputError(path, f"it is a file this command reads{same}; write elsewhere")


def _identity(path: Path | str) -> tuple[int, int] | None:
    """(device, inode) of what `path` names, through links; None if it names nothing."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


@contextlib.contextmanager
def output_file(
    path: Path | str, mode: str = "w", *, reads: Iterable[Path] = ()
) -> Iterator[_Writer]:
    """Opens `path` for writing ("w": UTF-8 text, "wb": bytes) by the module's rules;
    `reads`: the files the command reads, which it may not be. Errors in the body are
    the body's: only what writing the output raises becomes an `OutputError`."""
    if str(path) == STDOUT:
        with _stdout(mode) as out:
            yield out
        return
    check_output(path, reads)
    path = Path(path)
    if path.is_symlink():  # write what it points at; the link stays a link
        path = path.resolve()
    regular = not path.exists() or stat.S_ISREG(path.stat().st_mode)
    temp = None
    try:
        with _errors_of(path):
            if regular:
                fd, temp = _create_temp(path)
                raw = open(fd, "wb", closefd=True)
            else:
                raw = open(path, "wb")
        written = False
        try:
            with _encoded(raw, mode, path) as stream:
                out = _Writer(stream, path)
                yield out
                out.flush()
            with _errors_of(path):
                raw.flush()
                if regular:
                    os.fsync(raw.fileno())
                    if path.exists():  # the new file keeps the old one's permissions
                        os.chmod(raw.fileno(), stat.S_IMODE(path.stat().st_mode))
            written = True
        finally:  # after a failure, closing may fail again on what is still buffered
            with _errors_of(path) if written else contextlib.suppress(OSError, ValueError):
                raw.close()
        if regular:
            with _errors_of(path):
                os.replace(temp, path)
            _sync_directory(path.parent)
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            _PENDING.discard(temp)


def write_output(path: Path | str, data: str | bytes | memoryview, **options) -> None:
    """`path`'s whole contents, by `output_file`'s rules (`options`: its `reads`)."""
    with output_file(path, "w" if isinstance(data, str) else "wb", **options) as f:
        f.write(data)


def remove_temporaries() -> None:
    """Removes the temporary files of this process that no `output_file` finished or
    removed: a signal between creating one and entering its `try` leaves it here."""
    for temp in list(_PENDING):
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        _PENDING.discard(temp)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of `output_file`'s temporary files."""
    stem, _, random = name.removesuffix(".tmp").rpartition(".")
    return name.startswith(".") and name.endswith(".tmp") and len(random) == 8 and bool(stem)


def _create_temp(path: Path) -> tuple[int, Path]:
    """As `tempfile.mkstemp`, but the name is registered before the file exists, so a
    signal at any moment leaves nothing that `remove_temporaries` does not know of."""
    for _ in range(100):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        _PENDING.add(temp)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            return os.open(temp, flags, 0o666), temp  # 0o666 & ~umask, as open() would
        except FileExistsError:  # another writer's: never ours to remove
            _PENDING.discard(temp)
    raise OutputError(path, "no free temporary file name beside it")


@contextlib.contextmanager
def _encoded(raw: IO[bytes], mode: str, path: Path) -> Iterator[IO]:
    """`raw` as text or bytes, gzip-compressed for a `.gz` name (no name or date inside:
    the same contents give the same file). `raw` itself stays open."""
    gz = None
    if path.name.endswith(".gz"):
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    text = io.TextIOWrapper(gz or raw, encoding="utf-8") if "b" not in mode else None
    done = False
    try:
        yield text or gz or raw
        done = True
    finally:  # after a failure the file is discarded: nothing to report
        with _errors_of(path) if done else contextlib.suppress(Exception):
            if text is not None:
                text.detach()  # flushes into `raw` (or gzip) without closing it
            if gz is not None:
                gz.close()  # gzip's trailer; a GzipFile given a file object leaves it open


@contextlib.contextmanager
def _stdout(mode: str) -> Iterator[_Writer]:
    if sys.stdout is None:  # started with stdout closed: `nmt ... >&-`
        raise OutputError("<stdout>", "stdout is closed")
    stream = sys.stdout.buffer if "b" in mode else sys.stdout
    out = _Writer(stream, "<stdout>")
    yield out
    out.flush()


class _Writer:
    """A stream whose write errors name the output: `OutputError`, or `OutputClosed`
    for a closed pipe."""

    def __init__(self, stream, name: Path | str):
        self.stream, self.name = stream, name

    def write(self, data) -> int:
        with self._errors():
            return self.stream.write(data)

    def flush(self) -> None:
        with self._errors():
            self.stream.flush()

    def _errors(self):
        return _errors_of(self.name)


@contextlib.contextmanager
def _errors_of(name: Path | str) -> Iterator[None]:
    """OSErrors of writing `name` as `OutputError`s naming it; a closed pipe as
    `OutputClosed`."""
    try:
        yield
    except BrokenPipeError:
        raise OutputClosed(str(name)) from None
    except OSError as err:
        raise OutputError(name, err.strerror or str(err)) from None


def _sync_directory(directory: Path) -> None:
    """Makes the rename durable too (a crash right after it keeps the new file)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

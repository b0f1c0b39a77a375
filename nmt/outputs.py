"""Writing a user's output files so that no failure destroys what was there.

A regular file (or a new one) is written to a temporary file beside it, flushed to
disk and renamed over it only when complete: a full disk, a kill or an error halfway
leaves the old contents whole. Anything else that can be opened for writing (a
terminal, a pipe, /dev/null) is written through; a directory is refused. Every
failure is an `OutputError` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from nmt.errors import NmtError


class OutputError(NmtError):
    """An output that cannot be written, or that would overwrite an input."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.reason = reason


def check_output(path: Path, inputs: Iterable[Path] = ()) -> None:
    """Refuses, before any work, an output that is a directory, sits in a missing
    directory or is one of the `inputs` (the same file under any name)."""
    if path.is_dir():
        raise OutputError(path, "it is a directory")
    if not path.parent.is_dir():
        raise OutputError(path, f"{path.parent} is not a directory")
    for source in inputs:
        if path.exists() and source.exists() and os.path.samefile(path, source):
            raise OutputError(path, "it is also an input; write the output elsewhere")


@contextlib.contextmanager
def output_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Opens `path` for writing ("w": UTF-8 text, "wb": bytes); see the module's rules."""
    check_output(path)
    if path.is_symlink():  # write what it points at; the link stays a link
        path = path.resolve()
    encoding = None if "b" in mode else "utf-8"
    regular = not path.exists() or stat.S_ISREG(path.stat().st_mode)
    target = path.with_name(f".{path.name}.tmp") if regular else path
    try:
        with open(target, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if regular:
                os.fsync(f.fileno())
        if regular:
            if path.exists():  # the new file keeps the old one's permissions
                os.chmod(target, stat.S_IMODE(path.stat().st_mode))
            os.replace(target, path)
    except OSError as err:
        raise OutputError(path, err.strerror or str(err)) from None
    finally:
        if regular:
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)


def write_output(path: Path, data: str | bytes | memoryview) -> None:
    """`path`'s whole contents, by `output_file`'s rules."""
    with output_file(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)

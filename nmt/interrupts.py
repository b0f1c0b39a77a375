"""Ctrl-C, SIGTERM and SIGHUP: each raises `Interrupted`, so that every `finally` runs
(the temporary files of `nmt.outputs` are removed, a run's lock is released) and the
command ends with one line and the usual status, 128 + the signal's number.

`nmt.cli.main` installs the handlers once (`raising`). Training asks for the first
signal to be `deferred` to the end of the step in progress, so that it can save where
it stopped; a second signal raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

# Ctrl-C, `kill` and a closed terminal; one that is ignored (`nohup`, `cmd &` in a
# script) stays ignored
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop; `message`: what the command has to say about
    where it stopped (empty: just that it was interrupted)."""

    def __init__(self, signum: int = signal.SIGINT, message: str = ""):
        super().__init__(message)
        self.signum, self.message = signum, message

    @property
    def status(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them

    def __str__(self) -> str:
        return self.message or f"interrupted by {signal.Signals(self.signum).name}"


def _raise(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def raising(restore: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` while inside; the previous handlers come
    back after (`cli.main` may run more than once in a process: the tests), or, with
    `restore=False` (the process ends after), the signals are ignored: the command is
    over, and a signal during the interpreter's teardown must not end it as killed."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; signals reach it alone anyway
        return
    previous = _install(_raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if restore else signal.SIG_IGN)


def _install(handler) -> dict[int, object]:
    """`handler` for each of SIGNALS that is not ignored -> the handlers it replaced."""
    wanted = [s for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
    return {signum: signal.signal(signum, handler) for signum in wanted}


class Deferred:
    """The first signal received while `deferred` is active (`signum`, None if none)."""

    signum: int | None = None


@contextlib.contextmanager
def deferred(notice: Callable[[int], None] | None = None) -> Iterator[Deferred]:
    """Notes the first SIGINT or SIGTERM instead of raising, for the caller to stop at
    a moment of its choosing (`Deferred.signum`; `notice(signum)` is called then); a
    second one raises `Interrupted` at once. Outside the main thread nothing is deferred."""
    pending = Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def note(signum: int, frame) -> None:
        if pending.signum is not None:
            raise Interrupted(signum)
        pending.signum = signum
        if notice is not None:
            notice(signum)

    previous = _install(note)
    try:
        yield pending
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

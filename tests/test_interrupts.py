"""Signals raise, the first can be deferred, and an ignored one stays ignored."""

from __future__ import annotations

import os
import signal

import pytest

from nmt import interrupts
from nmt.interrupts import Interrupted


def test_sigint_and_sigterm_raise_with_their_status_and_the_handlers_come_back():
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with pytest.raises(Interrupted) as stop, interrupts.raising():
            os.kill(os.getpid(), signum)
            _spin()
        assert stop.value.status == status and str(stop.value).startswith("interrupted by SIG")
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before


def test_the_first_signal_is_deferred_and_a_second_raises_at_once():
    with interrupts.deferred() as asked:
        os.kill(os.getpid(), signal.SIGTERM)
        _spin()
        assert asked.signum == signal.SIGTERM  # noted, not raised
        with pytest.raises(Interrupted) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            _spin()
    assert stop.value.signum == signal.SIGINT


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with interrupts.raising():
            os.kill(os.getpid(), signal.SIGHUP)
            _spin()
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def _spin() -> None:
    """A few bytecodes: Python runs a pending signal's handler between them."""
    for _ in range(1000):
        pass

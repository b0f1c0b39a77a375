"""Runs `nmt serve`'s app under uvicorn, with a deadline on shutdown.

On SIGTERM (or SIGINT) uvicorn stops accepting and waits for the requests it has; the
app is told at once (`Draining`), so that a body still arriving `shutdown_grace` seconds
later is answered 503 and closed, and uvicorn itself stops waiting half a second after
that: the process is gone within the grace period and about a second, having answered
every request it had whole. Then it ends at once (`os._exit`, its logs flushed): the
interpreter's own teardown of torch takes a second or more, and there is nothing left
to save.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import uvicorn
from starlette.applications import Starlette

HEADROOM = 0.5  # seconds after the grace period for the last answers to be written


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette):
        super().__init__(config)
        self.draining = app.state.draining

    def handle_exit(self, sig, frame) -> None:
        self.draining.begin()
        super().handle_exit(sig, frame)


def run(app: Starlette, host: str, port: int) -> None:
    """Serves until SIGTERM (then exits 0) or SIGINT (130), once every connection is
    answered or closed: uvicorn raises the signal again, for the handlers set here."""
    signal.signal(signal.SIGTERM, lambda *_: _end(0))  # a stop asked for is a success
    signal.signal(signal.SIGINT, lambda *_: _end(130))
    grace = app.state.draining.grace
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=grace + HEADROOM,
    )
    _Server(config, app).run()


def _end(status: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

"""The guard: ASGI middleware around every request of `nmt serve`, the one place that
bounds a request in size and time, watches its client, and catches what nothing else did.

- The body is read here, whole, before any handler runs: over its limit
  (`Limits.body_limit`: by its Content-Length, or counted as a chunked body arrives) it
  is 413; not all there `body_timeout` seconds after the headers, 408; both close the
  connection. A handler
  then reads it from memory (`nmt.serve.door`).
- A client that goes away (while sending its body, or while its translation waits) is
  one log line and a count; its work is cancelled, so the batcher drops what is left.
- After SIGTERM (`Draining`), a body still arriving `shutdown_grace` seconds later is
  answered 503 and its connection closed, and so is a request the server stops waiting
  for: uvicorn then exits without a request left hanging.
- Anything a handler raises that is not a request's fault is a 500 with a JSON body,
  logged once with its traceback, counted in /metrics; the server goes on.
Every answer's status and time go to `Metrics` here (a CORS preflight, answered before
the guard, is not counted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from nmt.serve.door import RequestError
from nmt.serve.limits import Limits
from nmt.serve.metrics import Metrics

log = logging.getLogger(__name__)
DISCARD_FACTOR = 16  # a refused body is read (and dropped) up to this many limits


class Draining:
    """Whether the server is stopping; `stuck` is set `grace` seconds after it began."""

    def __init__(self, grace: float):
        self.grace, self.loop, self.stuck = grace, None, None

    def attach(self) -> None:
        """On the server's event loop, at start-up (the app's lifespan)."""
        self.loop, self.stuck = asyncio.get_running_loop(), asyncio.Event()

    def begin(self) -> None:
        """The server was told to stop (from a signal handler: thread-safe)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.call_later, self.grace, self.stuck.set)


class Guard:
    def __init__(self, app, *, limits: Limits, metrics: Metrics, draining: Draining):
        self.app, self.limits, self.metrics, self.draining = app, limits, metrics, draining

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # the lifespan
            return await self.app(scope, receive, send)
        start, status, done = time.perf_counter(), [0], [False]
        what = f"{scope['method']} {scope['path']}"

        async def watched_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif not message.get("more_body"):
                done[0] = True
            await send(message)

        try:
            body = await self._body(scope, receive)
            if body is None:
                self._went_away(what, start, "while sending its body")
            else:
                await self._run(scope, body, receive, watched_send, done, what, start)
        except RequestError as err:  # the body's size or time
            await _answer(watched_send, err.status, str(err), close=True)
        except asyncio.CancelledError:  # uvicorn gave up waiting, after the grace period
            if status[0] or self.draining.stuck is None or not self.draining.stuck.is_set():
                raise
            log.warning("%s: still running at the end of the shutdown grace period", what)
            await _answer(watched_send, 503, "the server is shutting down", close=True)
        except Exception as err:  # a bug: one log line with its traceback, a 500, go on
            log.error("%s failed: %s: %s", what, type(err).__name__, err, exc_info=err)
            self.metrics.count("server_errors")
            if not status[0]:
                message = f"the server failed on this request ({type(err).__name__}); it is logged"
                await _answer(watched_send, 500, message, close=False)
        finally:
            if status[0]:
                self.metrics.request(scope["path"], status[0], time.perf_counter() - start)

    async def _body(self, scope, receive) -> bytes | None:
        """The whole body, within the limits (else a RequestError); None: the client left."""
        headers = dict(scope["headers"])
        most = self.limits.body_limit(scope["path"])
        deadline = time.monotonic() + self.limits.body_timeout
        length = headers.get(b"content-length", b"").strip()
        if length.isdigit() and int(length) > most:
            if b"100-continue" not in headers.get(b"expect", b"").lower():
                await self._discard(receive, DISCARD_FACTOR * most, deadline)
            raise RequestError(f"the body is {int(length)} bytes, over the limit of {most}", 413)
        chunks, size = [], 0
        while True:
            message = await self._next(receive, deadline)
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > most:
                await self._discard(receive, DISCARD_FACTOR * most - size, deadline)
                raise RequestError(f"the body is over the limit of {most} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _next(self, receive, deadline: float) -> dict:
        """The next ASGI message, or 408 at the deadline, or 503 once draining is stuck."""
        get = asyncio.ensure_future(receive())
        waits = {get}
        stuck = self.draining.stuck
        if stuck is not None:
            waits.add(asyncio.ensure_future(stuck.wait()))
        timeout = max(0.0, deadline - time.monotonic())
        finished, _ = await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
        for waiting in waits:
            if waiting is not get:
                waiting.cancel()
        if get in finished:
            return get.result()
        get.cancel()
        if stuck is not None and stuck.is_set():
            raise RequestError("the server is shutting down: the body came too late", 503)
        seconds = self.limits.body_timeout
        raise RequestError(f"the body did not arrive within {seconds:g} s", 408)

    async def _discard(self, receive, most: int, deadline: float) -> None:
        """Reads and drops a refused body (up to `most` bytes, until the deadline), so that
        a client still sending it gets the answer rather than a broken pipe."""
        seen = 0
        try:
            while seen < most:
                message = await self._next(receive, min(deadline, time.monotonic() + 1))
                seen += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    return
        except RequestError:
            return

    async def _run(self, scope, body: bytes, receive, send, done, what: str, start) -> None:
        """The app on the read body; cancelled if its client goes away before the answer."""
        given = False

        async def replay() -> dict:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        app = asyncio.ensure_future(self.app(scope, replay, send))
        watch = asyncio.ensure_future(receive())  # returns when the client disconnects
        try:
            while not app.done():
                await asyncio.wait({app, watch}, return_when="FIRST_COMPLETED")
                if not app.done() and watch.done() and not done[0]:
                    app.cancel()
                    await asyncio.gather(app, return_exceptions=True)
                    self._went_away(what, start, "before its answer")
                    return
                if watch.done():  # the answer is complete: only the app is left to finish
                    await asyncio.wait({app})
            app.result()  # what the app raised, raised here
        finally:
            watch.cancel()
            if not app.done():  # this request itself was cancelled (uvicorn's shutdown)
                app.cancel()

    def _went_away(self, what: str, start: float, when: str) -> None:
        seconds = time.perf_counter() - start
        log.info("client went away %s: %s after %.1f s", when, what, seconds)
        self.metrics.count("client_disconnects")


async def _answer(send, status: int, message: str, *, close: bool) -> None:
    """A JSON error answer; `close`: the body may be unread, so the connection must go."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

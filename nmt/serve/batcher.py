"""Dynamic batching for `nmt serve`: the requests that arrive together, translated together.

A worker thread takes what is waiting, up to `max_wait_ms` after the first request or
`batch_lines` lines, groups it by language pair and options, and translates each group
as one call of `nmt.text.documents` (html: `nmt.text.markup`, page by page). In fp32 a line's
translation is the one it gets alone (tests/test_serve.py checks 32); int8 scales the
activations of each product by the rows in it, so there a batch can change a few. Past
`max_pending` requests admitted, a request is refused (503) rather than queued.
Other work on the models (`call`: `nmt inspect` for the page) runs on the same thread,
between batches, and counts as a pending request. `Metrics` counts requests, latency
and batches for the server's /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from nmt.errors import NmtError
from nmt.options import SearchOptions
from nmt.text.documents import translate_attended, translate_lines
from nmt.text.markup import translate_html
from nmt.translate import Translator

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestError(NmtError):
    """What the client sent cannot be served; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_text_chars: int = 20_000  # all the texts of one request together
    max_pending: int = 256  # requests waiting or being translated
    max_inspect_chars: int = 1_000  # the one sentence of /v1/inspect
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    batch_lines: int = 256  # lines in one batch at most


class Options(NamedTuple):
    """How to translate a job's lines: jobs with equal options can share a batch."""

    format: str = "text"  # or "html": a page per line
    search: SearchOptions = SearchOptions()
    attention: bool = False  # text only: each hypothesis with its `documents.Attention`


@dataclass
class _Job:
    pair: str
    lines: list[str]
    options: Options | Callable  # a callable: other work, run alone
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future


class Batcher:
    """Translates jobs on one worker thread, the jobs that wait together in one batch."""

    def __init__(
        self, translators: dict[str, Translator], limits: Limits, metrics: Metrics, glossary=None
    ):
        """`glossary` (`nmt.text.glossary`): every text's, but a `Line`'s own."""
        self.translators, self.limits, self.metrics = translators, limits, metrics
        self.glossary = glossary
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.pending, self.lock = 0, threading.Lock()
        self.thread = threading.Thread(target=self._work, name="nmt-batcher", daemon=True)
        self.thread.start()

    async def translate(self, pair: str, lines: list, options: Options) -> list:
        """Per line (a text, or a `documents.Line` with its constraints): its n-best list
        of Hypothesis (html: the page's translation; with attention: (Hypothesis,
        Attention) pairs). Lines with and without constraints share batches."""
        return await self._submit(pair, lines, options)

    async def call(self, work: Callable[[], object]) -> object:
        """work() on the worker thread (the models run on one thread), between batches."""
        return await self._submit("", [], work)

    async def _submit(self, pair: str, lines: list[str], options: Options | Callable):
        with self.lock:
            if self.pending >= self.limits.max_pending:
                raise RequestError("the server is busy: retry in a second", 503)
            self.pending += 1
        loop = asyncio.get_running_loop()
        job = _Job(pair, lines, options, loop, loop.create_future())
        self.jobs.put(job)
        try:
            return await job.done
        finally:
            with self.lock:
                self.pending -= 1

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=60)

    def _work(self) -> None:
        while (first := self.jobs.get()) is not None:
            batch, deadline = [first], time.monotonic() + self.limits.max_wait_ms / 1000
            lines = len(first.lines)
            while lines < self.limits.batch_lines:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                batch.append(job)
                lines += len(job.lines)
            groups: dict[tuple, list[_Job]] = {}
            for job in batch:
                groups.setdefault((job.pair, job.options), []).append(job)
            for (pair, options), jobs in groups.items():
                self._run(self.translators.get(pair), options, jobs)

    def _run(self, translator: Translator | None, options, jobs: list[_Job]) -> None:
        try:
            if callable(options):  # a call's work: one job
                results = [options()]
            else:
                results = self._translate(translator, options, jobs)
                self.metrics.batch(sum(len(j.lines) for j in jobs))
            for job, result in zip(jobs, results, strict=True):
                _answer(job, result, None)
        except Exception as err:  # answered as a 500 to these jobs; the worker goes on
            for job in jobs:
                _answer(job, None, err)

    def _translate(self, translator: Translator, options: Options, jobs: list[_Job]) -> list:
        search = {**dataclasses.asdict(options.search), "glossary": self.glossary}
        if options.format == "html":  # a page is its own unit
            return [[translate_html(translator, t, **search) for t in j.lines] for j in jobs]
        translate = translate_attended if options.attention else translate_lines
        found = iter(translate(translator, [line for job in jobs for line in job.lines], **search))
        return [[next(found) for _ in job.lines] for job in jobs]


def _answer(job: _Job, result, error) -> None:
    """Hands a job's result to its event loop; a loop closed since (its server or client
    gone) must not stop the worker, which every later request waits on."""
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(_settle, job.done, result, error)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the client went away
        return
    if error:
        future.set_exception(error)
    else:
        future.set_result(result)


class Metrics:
    """Counters and histograms in Prometheus' text exposition format."""

    def __init__(self):
        self.requests: Counter = Counter()  # (path, status) -> count
        self.latency: dict[str, list[int]] = {}  # path -> count per bucket
        self.latency_sum: Counter = Counter()
        self.batches = self.batched_lines = 0
        self.lock = threading.Lock()

    def request(self, path: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[path, status] += 1
            counts = self.latency.setdefault(path, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[sum(seconds > b for b in LATENCY_BUCKETS)] += 1
            self.latency_sum[path] += seconds

    def batch(self, lines: int) -> None:
        with self.lock:
            self.batches += 1
            self.batched_lines += lines

    def render(self, pending: int) -> str:
        with self.lock:
            out = ["# TYPE nmt_requests_total counter"]
            for (path, status), n in sorted(self.requests.items()):
                out.append(f'nmt_requests_total{{path="{path}",status="{status}"}} {n}')
            out.append("# TYPE nmt_request_seconds histogram")
            for path, counts in sorted(self.latency.items()):
                total = 0
                for bound, n in zip([*LATENCY_BUCKETS, "+Inf"], counts, strict=True):
                    total += n
                    out.append(f'nmt_request_seconds_bucket{{path="{path}",le="{bound}"}} {total}')
                out.append(f'nmt_request_seconds_count{{path="{path}"}} {total}')
                out.append(f'nmt_request_seconds_sum{{path="{path}"}} {self.latency_sum[path]}')
            out += ["# TYPE nmt_batches_total counter", f"nmt_batches_total {self.batches}"]
            out += ["# TYPE nmt_batched_lines_total counter"]
            out += [f"nmt_batched_lines_total {self.batched_lines}"]
            out += ["# TYPE nmt_pending_requests gauge", f"nmt_pending_requests {pending}"]
            return "\n".join(out) + "\n"

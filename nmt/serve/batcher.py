"""Dynamic batching for `nmt serve`: requests that wait together are translated together,
no long request stalls a short one, and no batch fails for one member.

One worker thread runs the models. Requests (jobs) wait in a rotation; each batch is
made for the pair and options of the job at its head, from every waiting job with the
same ones, in max-min fair shares of `Limits.batch_lines` (a line of more than
`LINE_CHARS` characters counts as several): a one-sentence job gets its line into the
next batch however long the others are, and a 5,000-line job goes through in pieces,
one per batch, while others come and go. Jobs that had a piece go to the back of the
rotation. After idling, the first job waits `max_wait_ms` for company.

If translating a batch raises, it is split in two and each half run again, down to the
job at fault, which alone gets the error; every other job gets the translation it would
have had anyway (in fp32 a line's translation does not depend on its batch: the tests
check it; int8 scales activations by the rows of a product, so there a few may differ).
A job whose client went away is dropped with what is left of it. Other work on the
models (`call`: /v1/inspect) takes its turn in the rotation, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from nmt.options import SearchOptions
from nmt.serve.door import RequestError
from nmt.serve.limits import Limits, line_weight
from nmt.serve.metrics import Metrics
from nmt.text.documents import translate_attended, translate_lines
from nmt.text.markup import translate_html
from nmt.translate import Translator

RETRY = {"Retry-After": "1"}


class Options(NamedTuple):
    """How to translate a job's lines: jobs with equal options can share a batch."""

    format: str = "text"  # or "html": a page per line
    search: SearchOptions = SearchOptions()
    attention: bool = False  # text only: each hypothesis with its `documents.Attention`


@dataclass(eq=False)
class _Job:
    pair: str
    lines: list[str]
    options: Options | Callable  # a callable: other work, run alone
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future
    weights: list[int] = field(default_factory=list)
    taken: int = 0  # lines handed to batches so far
    results: list = field(default_factory=list)
    over: bool = False  # answered, failed, or its client went away: nothing more to do

    @property
    def key(self) -> object:
        return self if callable(self.options) else (self.pair, self.options)


class Batcher:
    """Translates jobs on one worker thread, in fair batches (see the module's doc)."""

    def __init__(
        self, translators: dict[str, Translator], limits: Limits, metrics: Metrics, glossary=None
    ):
        """`glossary` (`nmt.text.glossary`): every text's, but a `Line`'s own."""
        self.translators, self.limits, self.metrics = translators, limits, metrics
        self.glossary = glossary
        self.waiting: deque[_Job] = deque()  # the rotation: jobs with lines not yet taken
        self.cond = threading.Condition()
        self.pending, self.closed = 0, False
        self.thread = threading.Thread(target=self._work, name="nmt-batcher", daemon=True)
        self.thread.start()

    async def translate(self, pair: str, lines: list, options: Options) -> list:
        """Per line (a text, or a `documents.Line` with its constraints): its n-best list
        of Hypothesis (html: the page's translation; with attention: (Hypothesis,
        Attention) pairs). Lines with and without constraints share batches."""
        return await self._submit(pair, lines, options) if lines else []

    async def call(self, work: Callable[[], object]) -> object:
        """work() on the worker thread (the models run on one thread), in its turn."""
        return (await self._submit("", [""], work))[0]

    async def _submit(self, pair: str, lines: list[str], options: Options | Callable):
        loop = asyncio.get_running_loop()
        job = _Job(pair, lines, options, loop, loop.create_future(), list(map(line_weight, lines)))
        with self.cond:
            if self.pending >= self.limits.max_pending:
                raise RequestError("the server is busy: retry in a second", 503, RETRY)
            if self.closed:
                raise RequestError("the server is shutting down", 503, RETRY)
            self.pending += 1
            self.waiting.append(job)
            self.cond.notify()
        try:
            return await job.done
        finally:
            job.over = True  # answered, or its client gone: the worker skips what is left
            with self.cond:
                self.pending -= 1

    def close(self, seconds: float = 1.0) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join(timeout=seconds)

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[tuple[_Job, int, int]] | None:
        """The next batch, (job, first line, end) per piece; blocks; None once closed."""
        with self.cond:
            idle = False
            while True:
                while self.waiting and self.waiting[0].over:
                    self.waiting.popleft()
                if self.closed:
                    return None
                if self.waiting:
                    break
                idle = True
                self.cond.wait()
            if idle:  # company for the first job: as many as come within max_wait_ms
                deadline = time.monotonic() + self.limits.max_wait_ms / 1000
                while (left := deadline - time.monotonic()) > 0 and not self.closed:
                    if sum(len(j.lines) - j.taken for j in self.waiting) >= self.limits.batch_lines:
                        break
                    self.cond.wait(left)
            return self._take()

    def _take(self) -> list[tuple[_Job, int, int]]:
        """The pieces of one batch (under the lock): max-min fair shares of batch_lines
        among the waiting jobs with the head's key, in rotation order."""
        key = self.waiting[0].key
        jobs = [j for j in self.waiting if j.key == key and not j.over]
        jobs = jobs[: self.limits.batch_lines]  # each takes one line at least
        wants = [sum(j.weights[j.taken :]) for j in jobs]
        pieces = []
        for job, share in zip(jobs, fair_shares(wants, self.limits.batch_lines), strict=True):
            end, used = job.taken + 1, job.weights[job.taken]
            while end < len(job.lines) and used + job.weights[end] <= share:
                used, end = used + job.weights[end], end + 1
            pieces.append((job, job.taken, end))
            job.taken = end
        for job in jobs:  # to the back of the rotation, or out of it once all is taken
            self.waiting.remove(job)
            if job.taken < len(job.lines):
                self.waiting.append(job)
        return pieces

    def _run(self, batch: list[tuple[_Job, int, int]]) -> None:
        """Translates a batch; if it raises, its halves, down to the job at fault."""
        live = [(job, start, end) for job, start, end in batch if not job.over]
        if not live:
            return
        first = live[0][0]
        try:
            if callable(first.options):
                results = [[first.options()]]
            else:
                translator = self.translators[first.pair]
                texts = [job.lines[start:end] for job, start, end in live]
                results = self._translate(translator, first.options, texts)
                self.metrics.batch(sum(map(len, texts)))
        except Exception as err:
            if len(live) == 1:
                _settle_soon(first, None, err)
                first.over = True
                return
            self.metrics.count("batch_retries")
            half = len(live) // 2
            self._run(live[:half])
            self._run(live[half:])
            return
        for (job, _, end), result in zip(live, results, strict=True):
            job.results += result
            if end == len(job.lines) and len(job.results) == len(job.lines):
                _settle_soon(job, job.results, None)

    def _translate(self, translator: Translator, options: Options, texts: list[list]) -> list:
        search = {**dataclasses.asdict(options.search), "glossary": self.glossary}
        if options.format == "html":  # a page is its own unit
            return [[translate_html(translator, t, **search) for t in lines] for lines in texts]
        translate = translate_attended if options.attention else translate_lines
        found = iter(translate(translator, [line for lines in texts for line in lines], **search))
        return [[next(found) for _ in lines] for lines in texts]


def fair_shares(wants: list[int], budget: int) -> list[int]:
    """Max-min fair shares of `budget`: each its want, or an equal part of what the smaller
    wants leave, whichever is less (at least 1 each)."""
    shares, left = [0] * len(wants), budget
    order = sorted(range(len(wants)), key=wants.__getitem__)
    for k, i in enumerate(order):
        shares[i] = max(1, min(wants[i], left // (len(order) - k)))
        left -= shares[i]
    return shares


def _settle_soon(job: _Job, result, error) -> None:
    """Hands a job's result to its event loop; a loop closed since (its server or client
    gone) must not stop the worker, which every later request waits on."""
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(_settle, job.done, result, error)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

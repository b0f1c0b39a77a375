"""The batcher's two rules, as properties: a long request never stalls a short one (its
lines go in fair pieces that take turns), and a batch never fails for one member (the
job at fault alone gets the error, every other job its translation alone)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.serve.batcher import Batcher, Options, fair_shares
from nmt.serve.limits import Limits
from nmt.serve.metrics import Metrics
from nmt.text.documents import translate_lines
from nmt.translate import Translator

SENTENCES = [
    f"Der {w} sieht {n} {v}." for w in ("hund", "mann") for n in range(5) for v in ("ball", "haus")
]


@given(wants=st.lists(st.integers(1, 500), min_size=1, max_size=40), budget=st.integers(1, 256))
def test_fair_shares_are_max_min_fair(wants, budget):
    shares = fair_shares(wants, budget)

    assert all(1 <= s <= w for s, w in zip(shares, wants, strict=True))
    if len(wants) <= budget:  # (the batcher never asks for more shares than lines)
        assert sum(shares) <= budget
        short = [s for s, w in zip(shares, wants, strict=True) if s < w]
        if short:  # the budget all given, and nobody cut short has less than any other
            assert sum(shares) == budget and min(short) >= max(shares) - 1


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.load(trained_run, precision="fp32")


class Recording:
    """A translator that records each call's lines (and fails on a marked one)."""

    def __init__(self, translator: Translator, marked: str = "\0never"):
        self.inner, self.marked, self.calls = translator, marked, []
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def translate(self, texts, **options):
        with self.lock:
            self.calls.append(list(texts))
        if any(self.marked in t for t in texts):
            raise RuntimeError("planted")
        time.sleep(0.01)  # a batch takes a while: requests arrive while one runs
        return self.inner.translate(texts, **options)


def run(batcher: Batcher, jobs: list[tuple[float, list[str]]]):
    """Submits each job's lines after its delay -> each result or exception, in order."""

    async def main():
        async def one(delay, lines):
            await asyncio.sleep(delay)
            return await batcher.translate("de-en", lines, Options())

        return await asyncio.gather(*(one(d, lines) for d, lines in jobs), return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_a_short_request_waits_about_one_batch_behind_a_long_one(translator):
    recording = Recording(translator)
    batcher = Batcher({"de-en": recording}, Limits(batch_lines=8, max_wait_ms=0), Metrics(set()))
    long = [SENTENCES[i % len(SENTENCES)] for i in range(200)]

    results = run(batcher, [(0.0, long), (0.05, ["Die katze sieht den ball."])])

    assert [r[0].text for r in results[1]] == [
        next(translate_lines(translator, ["Die katze sieht den ball."]))[0].text
    ]
    calls = recording.calls
    short_at = next(i for i, c in enumerate(calls) if "Die katze sieht den ball." in c)
    assert short_at < len(calls) - 5  # long before the long request's end
    assert all(len(c) <= 8 for c in calls)  # pieces of at most --max-batch-lines


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    jobs=st.lists(
        st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=5), min_size=2, max_size=12
    ),
    bad=st.sets(st.integers(0, 11), min_size=1, max_size=3),
)
def test_a_batch_never_fails_for_one_member(translator, jobs, bad):
    bad = {i for i in bad if i < len(jobs)} or {0}
    marked = "Ein frau spielt mit groß."
    jobs = [[*lines, marked] if i in bad else lines for i, lines in enumerate(jobs)]
    recording = Recording(translator, marked="frau spielt mit groß")
    batcher = Batcher({"de-en": recording}, Limits(max_wait_ms=50), Metrics(set()))

    results = run(batcher, [(0.0, lines) for lines in jobs])

    for i, (lines, result) in enumerate(zip(jobs, results, strict=True)):
        if i in bad:
            assert isinstance(result, RuntimeError)
        else:
            expected = [h[0].text for h in translate_lines(translator, lines)]
            assert [r[0].text for r in result] == expected

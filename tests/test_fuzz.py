"""Hostile input never crashes a translator and never changes the line count."""

from __future__ import annotations

import contextlib
import io
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.cli import main
from nmt.translate import Translator

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Any character UTF-8 can carry (not lone surrogates): controls, separators such as
# U+0085 / U+2028 that str.splitlines() would split on, combining marks, emoji.
CHARS = st.characters(blacklist_categories=("Cs",))
LINE = st.one_of(
    st.text(CHARS, max_size=40),
    st.text(CHARS, min_size=300, max_size=2000),  # past the model's 100-piece limit
    st.sampled_from(["", " ", "\t", "\r", "\x00", "\x85", "\u2028", "\ufeff", "ein hund."]),
)


@pytest.fixture(scope="module")
def translator(trained_run):
    return Translator.load(trained_run, precision="fp32")


@FUZZ
@given(lines=st.lists(LINE, max_size=8), beam=st.sampled_from([1, 3]))
def test_translate_returns_one_result_per_line_for_any_text(translator, lines, beam):
    results = translator.translate(lines, beam=beam, nbest=1)

    assert len(results) == len(lines)
    assert all(len(nbest) == 1 and isinstance(nbest[0].text, str) for nbest in results)
    assert all(nbest[0].text == "" for line, nbest in zip(lines, results, strict=True) if not line)


def cli_translate(run, data: bytes, *options: str) -> tuple[int, str, str]:
    """`nmt translate RUN OPTIONS` with `data` on stdin -> (exit status, stdout, stderr)."""
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    saved, sys.stdin = sys.stdin, stdin
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(["-q", "translate", str(run), "--beam", "2", *options])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    finally:
        sys.stdin = saved
    return status, out.getvalue(), err.getvalue()


def line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@FUZZ
@given(lines=st.lists(LINE.map(lambda s: s.replace("\n", " ")), max_size=6), end=st.booleans())
def test_the_cli_writes_one_line_per_input_line(trained_run, lines, end):
    data = ("\n".join(lines) + ("\n" if end and lines else "")).encode("utf-8")

    status, out, _ = cli_translate(trained_run, data)

    assert status == 0
    assert out.count("\n") == line_count(data)


@FUZZ
@given(data=st.lists(st.binary(max_size=60), max_size=6).map(b"\n".join))
def test_invalid_utf8_is_replaced_or_named_by_line_never_a_crash(trained_run, data):
    status, out, _ = cli_translate(trained_run, data, "--errors", "replace")
    assert status == 0
    assert out.count("\n") == line_count(data)

    status, out, err = cli_translate(trained_run, data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        bad = next(i for i, line in enumerate(data.split(b"\n"), 1) if not _utf8(line))
        assert status == 2
        assert err == f"nmt: error: <stdin> line {bad}: not valid UTF-8\n"
    else:
        assert status == 0
        assert out.count("\n") == line_count(data)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

"""One definition of each search option: the same bad value gets the same refusal from
the Python API (OptionError), the CLI (exit 2, `nmt: error: ...`) and the server (400,
{"error": ...}). The cases are generated from `nmt.options.SEARCH`'s bounds, plus the
rules between options."""

from __future__ import annotations

import math

import pytest

from nmt import cli
from nmt.options import SEARCH, OptionError, SearchOptions, parse_interval
from nmt.serve.openapi import SERVED
from nmt.translate import Translator
from tests.test_serve import call, serving


def bad_values() -> list[tuple[dict, str]]:
    """(options, the refusal's text): each option just outside its bounds and of the
    wrong type, and each rule between options broken."""
    cases = []
    for name, option in SEARCH.items():
        low, high, low_in, high_in = parse_interval(option.bounds)
        outside = [low - 1 if low_in else low] + ([] if math.isinf(high) else [high + 1])
        for value in outside:
            value = option.kind(value)
            cases.append(({name: value}, f"{name} must be {_range(option)}, got {value}"))
        what = "an integer" if option.kind is int else "a number"
        cases.append(({name: "x"}, f"{name} must be {what}, got 'x'"))
    cases += [
        ({"beam": 2, "nbest": 3}, "nbest 3 needs a beam of 3 or more, got 2"),
        ({"sample_temperature": 1.0, "nbest": 2}, "sampling draws one output per line"),
        ({"sample_top_k": 3}, "sample_top_k applies only with sample_temperature > 0"),
    ]
    return cases


def _range(option) -> str:
    low, high, low_in, _ = parse_interval(option.bounds)
    return f"{'>=' if low_in else '>'} {low:g}" if math.isinf(high) else f"in {option.bounds}"


CASES = bad_values()


def test_every_option_has_cases_and_the_parse_of_text_equals_the_typed_value():
    assert {name for options, _ in CASES for name in options} == set(SEARCH)
    typed = SearchOptions(beam=4, nbest=2, alpha=0.5, max_tokens=100)
    text = {"beam": "4", "nbest": "2", "alpha": "0.5", "max_tokens": "100", "sample_top_k": ""}
    assert SearchOptions.parse(text) == typed


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.load(trained_run, precision="fp32")


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run) as url:
        yield url


@pytest.mark.parametrize(("options", "refusal"), CASES, ids=[str(c[0]) for c in CASES])
def test_a_bad_option_gets_one_refusal_everywhere(
    options, refusal, translator, trained_run, server, capsys
):
    with pytest.raises(OptionError) as python:
        translator.translate(["Ein hund."], **options)

    argv = ["-q", "translate", str(trained_run), "--precision", "fp32"]
    for name, value in options.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    said = capsys.readouterr().err

    assert refusal in str(python.value)
    assert exited.value.code == 2 and said == f"nmt: error: {python.value}\n"
    if set(options) <= set(SERVED):
        body = {"text": "Ein hund.", "source": "de", "target": "en", **options}
        status, answer, _ = call(server, "/v1/translate", body)
        assert (status, answer) == (400, {"error": str(python.value)})

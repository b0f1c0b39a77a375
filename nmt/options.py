"""What a user sets per call, each option with its bounds, defined once.

`SEARCH` lists the search options that `nmt translate`'s flags, the Python API's keyword
arguments and the server's JSON fields set; the parser's arguments and help, the
server's checks and its OpenAPI schema are derived from it, and `SearchOptions` checks
a value once, with the same message everywhere (an `OptionError`). The run's own
defaults are its `decode` config, whose bounds are these. `Constraints` are a line's
own: what its translation must contain, must not, and begins with (JSON Lines input
and the server's fields parse into it). Also here: the precisions, the device names,
and the interval notation ("[0, 1)") that every bound is written in. No torch here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from nmt.errors import NmtError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")  # int8: inference on a CPU only
PRECISION_HELP = "auto: bf16 on GPUs and on CPUs with bf16 units, else fp32; int8: CPU decoding"
DEVICE_HELP = "auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N"
MAX_BEAM = 64  # a beam's memory, rows x vocabulary a step, grows with its size


class OptionError(NmtError):
    """A search option out of its bounds, of the wrong type, or at odds with another."""


@dataclass(frozen=True)
class Option:
    name: str  # the Python keyword and JSON field; the CLI flag is --name-with-dashes
    kind: type  # int or float
    bounds: str  # an interval: "[1, 64]", "[0, inf)"
    help: str


SEARCH = {
    option.name: option
    for option in (
        Option("beam", int, f"[1, {MAX_BEAM}]", "beam size, 1: greedy (default: the run's)"),
        Option("nbest", int, f"[1, {MAX_BEAM}]", "hypotheses per line, best first; <= beam"),
        Option("alpha", float, "[0, 10]", "GNMT length penalty exponent (default: the run's)"),
        Option("max_tokens", int, "[1, inf)", "source tokens per batch (default: the run's)"),
        Option("sample_temperature", float, "[0, inf)", "> 0: sample at it instead of searching"),
        Option("sample_top_k", int, "[0, inf)", "sample among the k most likely (0: all)"),
    )
}


@dataclass(frozen=True)
class SearchOptions:
    """How to search for one call's translations; None: the run's decode config."""

    beam: int | None = None
    nbest: int = 1
    alpha: float | None = None
    max_tokens: int | None = None
    sample_temperature: float = 0.0
    sample_top_k: int = 0

    def __post_init__(self):
        for name, option in SEARCH.items():
            value = getattr(self, name)
            if value is not None:
                check(option, value)
        if self.beam is not None and self.nbest > self.beam:
            raise OptionError(
                f"nbest {self.nbest} needs a beam of {self.nbest} or more, got {self.beam}"
            )
        if self.sampling and self.nbest > 1:
            raise OptionError(
                f"sampling draws one output per line: nbest must be 1, got {self.nbest}"
            )
        if self.sample_top_k and not self.sampling:
            raise OptionError("sample_top_k applies only with sample_temperature > 0")

    @property
    def sampling(self) -> bool:
        return self.sample_temperature > 0

    @classmethod
    def parse(cls, values: Mapping[str, object]) -> SearchOptions:
        """From text (the CLI's arguments, a form's fields) or JSON values; None or "":
        unset. Only `SEARCH`'s names."""
        return cls(**{k: convert(SEARCH[k], v) for k, v in values.items() if v not in (None, "")})


MAX_PHRASES = 64  # a line's required alternatives and forbidden phrases together
MAX_PHRASE_CHARS = 200


@dataclass(frozen=True)
class Constraints:
    """One line's constraints, in target text: each of `include` is a choice of phrases
    (any one meets it: a term's several renderings), `avoid` phrases must not appear,
    and the translation begins with `prefix`. Checked once, here."""

    include: tuple[tuple[str, ...], ...] = ()
    avoid: tuple[str, ...] = ()
    prefix: str = ""

    def __post_init__(self):
        phrases = [p for choice in self.include for p in choice] + list(self.avoid)
        if any(not choice for choice in self.include):
            raise OptionError("a constraint needs at least one phrase, got an empty list")
        for phrase in [*phrases, *([self.prefix] if self.prefix else [])]:
            _check_phrase(phrase)
        if len(phrases) > MAX_PHRASES:
            raise OptionError(f"{len(phrases)} phrases to meet or avoid, over {MAX_PHRASES}")

    def __bool__(self) -> bool:
        return bool(self.include or self.avoid or self.prefix)

    def merged(self, other: Constraints) -> Constraints:
        """Both's phrases; `other`'s prefix where it has one."""
        avoid = self.avoid + tuple(p for p in other.avoid if p not in self.avoid)
        return Constraints(self.include + other.include, avoid, other.prefix or self.prefix)

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Constraints:
        """From JSON: "constraints" (a list: a phrase, or a list of phrases any one of
        which meets it), "avoid" (a list of phrases), "prefix" (a phrase); each may be
        absent or null."""
        include, avoid, prefix = (data.get(k) for k in ("constraints", "avoid", "prefix"))
        include, avoid = ([] if x is None else x for x in (include, avoid))
        if not isinstance(include, list):
            raise OptionError(f"'constraints' must be a list, got {include!r}")
        choices = [c if isinstance(c, list) else [c] for c in include]
        if not all(isinstance(p, str) for c in choices for p in c):
            raise OptionError("'constraints' must hold phrases or lists of phrases (strings)")
        if not isinstance(avoid, list) or not all(isinstance(p, str) for p in avoid):
            raise OptionError(f"'avoid' must be a list of phrases (strings), got {avoid!r}")
        if not isinstance(prefix, str | None):
            raise OptionError(f"'prefix' must be a string, got {prefix!r}")
        return cls(tuple(map(tuple, choices)), tuple(avoid), prefix or "")


def _check_phrase(phrase: str) -> None:
    if not phrase.strip():
        raise OptionError(f"a phrase to meet, avoid or begin with is empty: {phrase!r}")
    if len(phrase) > MAX_PHRASE_CHARS:
        raise OptionError(f"a phrase of {len(phrase)} characters, over {MAX_PHRASE_CHARS}")
    if phrase.splitlines() != [phrase]:  # a line break would split the output line
        raise OptionError(f"a phrase must be one line: {phrase!r}")
    try:
        phrase.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800": a lone surrogate
        raise OptionError(f"a phrase is not valid Unicode: {phrase!r}") from None


def convert(option: Option, value: object) -> int | float:
    """`value` as the option's kind, checked: text is parsed, a whole float is an int, a
    bool is refused (JSON's true would otherwise read as 1)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # text that is no number is refused as text
            value = float(value) if option.kind is float else int(value.strip())
    if option.kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    return check(option, value)


def check(option: Option, value: object) -> int | float:
    """`value` (of the option's kind) within the option's bounds, or an OptionError."""
    kinds = (int, float) if option.kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise OptionError(f"{option.name} must be {_kind_name(option)}, got {value!r}")
    if not math.isfinite(value):
        raise OptionError(f"{option.name} must be a finite number, got {value}")
    if not within(value, option.bounds):
        raise OptionError(f"{option.name} must be {describe(option.bounds)}, got {value}")
    return value


def _kind_name(option: Option) -> str:
    return "an integer" if option.kind is int else "a number"


def parse_interval(text: str) -> tuple[float, float, bool, bool]:
    """ "[0, 1)" -> (0.0, 1.0, low end included, high end included)."""
    low, high = (float(end) for end in text[1:-1].split(","))
    return low, high, text[0] == "[", text[-1] == "]"


def within(number: float, interval: str) -> bool:
    low, high, low_in, high_in = parse_interval(interval)
    return (low < number or (low_in and number == low)) and (
        number < high or (high_in and number == high)
    )


def describe(interval: str) -> str:
    """ "[1, inf)" -> ">= 1"; "(0, 1]" -> "in (0, 1]"."""
    low, high, low_in, _ = parse_interval(interval)
    return f"{'>=' if low_in else '>'} {low:g}" if math.isinf(high) else f"in {interval}"

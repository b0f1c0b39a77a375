"""What a user sets per call, each option with its bounds, defined once.

`SEARCH` lists the search options that `nmt translate`'s flags, the Python API's keyword
arguments and the server's JSON fields set; the parser's arguments and help, the
server's checks and its OpenAPI schema are derived from it, and `SearchOptions` checks
a value once, with the same message everywhere (an `OptionError`). The run's own
defaults are its `decode` config, whose bounds are these. Also here: the precisions, the
device names, and the interval notation ("[0, 1)") that every bound is written in.
No torch in this module.
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

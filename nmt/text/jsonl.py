"""JSON Lines input for `nmt translate --format jsonl`: each line a text with its own
constraints, for tools that compute their own (a CAT tool's terms, a prefix typed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from nmt.options import Constraints, OptionError
from nmt.text.documents import Line

JSONL_KEYS = ("constraints", "avoid", "prefix")


def jsonl_lines(lines: Iterable[str], name: str, check=None) -> Iterator[Line]:
    """JSON Lines input: each line an object {"text": ..., and optionally "constraints",
    "avoid", "prefix" (`Constraints.parse`)}; a blank line is an empty one. `check`:
    also run on each line's constraints (`Translator.targets`: can the model write
    them). Errors name `name` and the line; a text with a line break is one (its
    translation could not be one output line)."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            yield Line("")
            continue
        try:
            data = json.loads(raw.removeprefix("\ufeff") if number == 1 else raw)
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                raise OptionError('expected an object with a "text" string')
            unknown = sorted(data.keys() - {"text", *JSONL_KEYS})
            if unknown:
                raise OptionError(
                    f"unknown keys {unknown}: known are text, {', '.join(JSONL_KEYS)}"
                )
            data["text"].encode("utf-8")  # JSON's "\ud800", a lone surrogate: refused
            if len(data["text"].splitlines()) > 1:  # its translation would be two lines
                raise OptionError(
                    '"text" holds a line break: a record is one output line (make two records)'
                )
            line = Line(data["text"], Constraints.parse(data))
            if check:
                check(line.constraints)
            yield line
        except (json.JSONDecodeError, UnicodeEncodeError, OptionError) as err:
            raise OptionError(f"{name} line {number}: {err}") from None
        except RecursionError:  # json.loads recurses into each level of nesting
            raise OptionError(f"{name} line {number}: nested too deep") from None

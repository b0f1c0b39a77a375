"""The door: every request's parameters, read in one place, sound or refused with a 400.

LibreTranslate reads `request.values` (the query string and a form) and JSON bodies, and
its clients use all three: deep_translator sends its parameters in the query string,
libretranslatepy a urlencoded form, LibreTranslate's own page a multipart form, most
others JSON. `read` takes the query string and the body (already read, under its size and
time limits, by `nmt.serve.guard`) and gives `Params`, whose typed getters the handlers
use. What nothing after the door has to guard against:

- text that is not Unicode: a lone surrogate (JSON's "\\ud800", what a browser sends for a
  string cut inside an emoji) or bytes that are not UTF-8 in a form or the query string
  (decoded with surrogateescape, so both look alike) is refused, naming the field;
- a JSON body nested deeper than `Limits.max_depth` (checked on the raw bytes before the
  parser recurses), a number that is not finite or has more than 20 digits, an array or
  object of more than `Limits.batch_limit` items;
- a field given twice (in the query string and in the body, or twice in a form).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import re
import urllib.parse
from dataclasses import dataclass

from nmt.errors import NmtError
from nmt.options import Option, convert
from nmt.serve.limits import Limits

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MAX_DIGITS = 20  # of a JSON number's integer part: a bigger one is nobody's option
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DELTA = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class RequestError(NmtError):
    """What the client sent cannot be served; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass(frozen=True)
class Params:
    """A request's parameters: `fields` by name (text from the query string or a form,
    any JSON value from a JSON object), and `body`, the JSON body as parsed (None for a
    form or no body): OpenNMT-py's API sends a list."""

    fields: dict[str, object]
    body: object = None
    files: dict[str, tuple[str, bytes]] = dataclasses.field(default_factory=dict)  # name, data

    def get(self, name: str, default: object = None) -> object:
        value = self.fields.get(name)
        return default if value is None or value == "" else value

    def text(self, name: str) -> str:
        """A required string field (LibreTranslate's clients send none empty)."""
        value = self.get(name)
        if value is None:
            raise RequestError(f"missing field '{name}'")
        if not isinstance(value, str):
            raise RequestError(f"'{name}' must be a string, got {_kind(value)}")
        return value

    def texts(self, name: str) -> tuple[list[str], bool]:
        """A string or a list of strings -> the list, and whether it was one string."""
        value = self.get(name)
        if value is None or value == []:
            raise RequestError(f"missing field '{name}'")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError(f"'{name}' must be a string or a list of strings")
        return texts, isinstance(value, str)

    def number(self, option: Option) -> int | float | None:
        """An `nmt.options` option, text or JSON, checked against its bounds; None: unset."""
        value = self.get(option.name)
        return None if value is None else convert(option, value)

    def flag(self, name: str) -> bool:
        value = self.get(name, False)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise RequestError(f"'{name}' must be true or false, got {value!r}")
        return value


def read(
    query: bytes, body: bytes, content_type: str, limits: Limits, *, files: bool = False
) -> Params:
    """The parameters of a request: its raw query string, its body and Content-Type;
    `files`: whether a multipart form may upload files (else one is a 400)."""
    fields = _pairs(query.decode("utf-8", "surrogateescape"), "query string", limits)
    parsed, uploads = None, {}
    kind = content_type.split(";")[0].strip().lower()
    if kind == FORM:
        more = _pairs(body.decode("utf-8", "surrogateescape"), "form", limits)
    elif kind == MULTIPART:
        more, uploads = _multipart(body, content_type, limits)
        if uploads and not files:
            raise RequestError("a file in the form: files are translated at /translate_file")
    elif body.strip():  # JSON, whatever it says it is: clients forget the header
        parsed = parse_json(body, limits)
        more = list(parsed.items()) if isinstance(parsed, dict) else []
    else:
        more = []
    merged: dict[str, object] = {}
    for name, value in itertools.chain(fields, more):
        if name in merged:
            raise RequestError(f"'{name}' is given twice (query string, body or form)")
        merged[name] = value
    return Params(merged, parsed, uploads)


def parse_json(raw: bytes, limits: Limits) -> object:
    """A JSON body, bounded before and while it is parsed (see the module's list)."""
    if _too_deep(raw, limits.max_depth):
        raise RequestError(f"the JSON body is nested deeper than {limits.max_depth} levels")
    try:
        value = json.loads(
            raw.decode("utf-8", "surrogateescape"),
            parse_constant=_refuse_constant,
            parse_float=_finite,
            parse_int=_bounded_int,
        )
    except json.JSONDecodeError as err:
        raise RequestError(f"the body is not valid JSON: {err}") from None
    _check(value, "", limits)
    return value


def _too_deep(raw: bytes, most: int) -> bool:
    """Whether the brackets outside strings nest deeper than `most` (a linear scan)."""
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return any(depth > most for depth in itertools.accumulate(_DELTA[b] for b in brackets))


class _Refused(str):
    """A number the parser met that no request may hold, refused by `_check`, which
    knows its field: NaN, Infinity, 1e309, or more than MAX_DIGITS digits."""


def _refuse_constant(text: str) -> _Refused:
    return _Refused(text)


def _finite(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(text)


def _bounded_int(text: str) -> int | _Refused:
    return int(text) if len(text.lstrip("-")) <= MAX_DIGITS else _Refused(text)


def _check(value: object, where: str, limits: Limits) -> None:
    """Every string (keys too) is text; no array or object holds over batch_limit items.
    Recursion is safe: the depth was bounded before parsing."""
    if isinstance(value, _Refused):
        shown = value if len(value) < 30 else f"a number of {len(value)} digits"
        raise RequestError(
            f"'{where or 'the body'}' is {shown}: not a finite number of at most "
            f"{MAX_DIGITS} digits"
        )
    if isinstance(value, str):
        sound(value, where or "the body")
    elif isinstance(value, list | dict):
        if len(value) > limits.batch_limit:
            name = f"'{where}'" if where else "the body"
            raise RequestError(f"{name} has {len(value)} items: {limits.batch_limit} at most")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                sound(key, f"a field name in '{where}'" if where else "a field name")
            inner = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip(".")
            _check(item, inner, limits)


def sound(text: str, where: str) -> str:
    """`text`, if it is Unicode text (UTF-8 can encode it), else a RequestError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = ord(text[err.start])
        raise RequestError(
            f"'{where}' is not text: U+{bad:04X} at character {err.start} is a lone "
            "surrogate (or a byte that is not UTF-8)"
        ) from None
    return text


def _pairs(encoded: str, source: str, limits: Limits) -> list[tuple[str, str]]:
    """A urlencoded string's (name, value) pairs, each sound."""
    try:
        pairs = urllib.parse.parse_qsl(
            encoded, keep_blank_values=True, errors="surrogateescape",
            max_num_fields=limits.batch_limit,
        )  # fmt: skip
    except ValueError:
        raise RequestError(f"the {source} has over {limits.batch_limit} fields") from None
    return [(sound(name, "a field name"), sound(v, name)) for name, v in pairs]


def _multipart(body: bytes, content_type: str, limits: Limits):
    """A multipart form's fields [(name, text)] (as LibreTranslate's page sends them) and
    its files {name: (file name, data)}; a field or file given twice: 400."""
    import python_multipart

    fields, files = [], {}

    def file(f) -> None:
        name = sound((f.field_name or b"").decode("utf-8", "surrogateescape"), "a field name")
        if name in files:
            raise RequestError(f"'{name}' is given twice (query string, body or form)")
        given = sound((f.file_name or b"").decode("utf-8", "surrogateescape"), f"{name}'s name")
        f.file_object.seek(0)
        files[name] = (given, f.file_object.read())

    def field(f) -> None:
        if len(fields) >= limits.batch_limit:
            raise RequestError(f"the form has over {limits.batch_limit} fields")
        name = sound((f.field_name or b"").decode("utf-8", "surrogateescape"), "a field name")
        fields.append((name, sound((f.value or b"").decode("utf-8", "surrogateescape"), name)))

    headers = {"Content-Type": content_type.encode("latin-1", "replace")}
    try:
        python_multipart.parse_form(headers, io.BytesIO(body), field, file)
    except RequestError:
        raise
    except ValueError as err:  # python-multipart's errors are ValueErrors
        raise RequestError(f"the multipart form cannot be read: {err}") from None
    return fields, files


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", bool: "true or false"}.get(type(value), "a number")

"""Subtitles, .srt and WebVTT .vtt: each cue's text translated whole (its lines joined:
a sentence often runs over two), its tags and line breaks put back by the model's
alignments (`nmt.text.placement`); where a line would then be empty or wider than the
cue's widest, the translation is re-wrapped into as many lines as the cue had, of about
equal width. Numbers, timings, cue settings, identifiers, NOTE, STYLE and REGION blocks
are kept byte for byte.

srt (the maintained SRT parser) reads the file and rejects broken timings, naming where
the bad block starts; its own grammar (`srt.SRT_REGEX`) finds each cue's text, which
is replaced in the source, since `srt.compose` would re-format every timing. webvtt-py
reads .vtt files and checks them; its own timing pattern checks each cue's timings line,
so that an error names its line; the cues' text is replaced in the source likewise.

Tags (`<i>`, `<b>`, `<font color=...>`, `<v Speaker>`, `<c.class>`, VTT's inline
timestamps, ASS overrides like `{\\an8}`) are Marks; VTT's entities are read as the
characters they stand for and written escaped.
"""

from __future__ import annotations

import html
import re

import srt
import webvtt
from webvtt.vtt import WebVTTCueBlock

from nmt.text.formats import DocumentError, line_of
from nmt.text.placement import Mark, Text, translate_units, with_slots

TAG = re.compile(r"<[^<>\n]*>|\{\\[^{}\n]*\}")
NEWLINE = re.compile(r"\r?\n")
MARK = re.compile(f"{TAG.pattern}|{NEWLINE.pattern}")


def translate(translator, text: str, name: str, *, fmt: str, files, **options) -> str:
    spans = _srt_cues(text, name) if fmt == "srt" else _vtt_cues(text, name)
    escaped = fmt == "vtt"
    cues = [_cue(text[a:b], escaped) for a, b in spans]
    texts = translate_units(translator, [[item for _, item in cue] for cue in cues], **options)
    out, pos = [], 0
    for (a, b), cue, new in zip(spans, cues, texts, strict=True):
        out.append(text[pos:a])
        out.append(text[a:b] if new is None else _write(text[a:b], cue, new, escaped))
        pos = b
    return "".join(out) + text[pos:]


def _srt_cues(text: str, name: str) -> list[tuple[int, int]]:
    try:
        for _ in srt.parse(text):
            pass
    except srt.SRTParseError as err:
        line = line_of(text, err.expected_start)
        raise DocumentError(f"{name} line {line}: not a subtitle block (broken timings?)") from None
    except srt.TimestampParseError as err:
        raise DocumentError(f"{name}: {err}") from None
    return [m.span(5) for m in srt.SRT_REGEX.finditer(text)]


def _vtt_cues(text: str, name: str) -> list[tuple[int, int]]:
    """Each cue's payload (start, end) in `text`, its timings line checked."""
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].startswith("WEBVTT"):
        raise DocumentError(f"{name} line 1: a WebVTT file starts with WEBVTT")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    spans, i = [], 0
    while i < len(lines):
        if not lines[i].strip("\r\n"):
            i += 1
            continue
        end = i
        while end < len(lines) and lines[end].strip("\r\n"):
            end += 1
        timing = next((j for j in (i, i + 1) if j < end and "-->" in lines[j]), None)
        if timing is not None and i > 0:
            if not WebVTTCueBlock.CUE_TIMINGS_PATTERN.match(lines[timing]):
                raise DocumentError(f"{name} line {timing + 1}: broken cue timings")
            if timing + 1 < end:
                payload_end = starts[end] - len(lines[end - 1]) + len(lines[end - 1].rstrip("\r\n"))
                spans.append((starts[timing + 1], payload_end))
        i = end
    try:
        webvtt.from_string(text)
    except Exception as err:  # webvtt-py's errors: MalformedFileError, MalformedCaptionError
        raise DocumentError(f"{name}: not a readable WebVTT file ({err})") from None
    return spans


def _cue(payload: str, escaped: bool) -> list[tuple[str | None, Text | Mark]]:
    """A cue's text as (raw, item) pairs: its tags Marks, its line breaks Marks that
    stand for a space (so that its lines are translated as one)."""
    pairs: list[tuple[str | None, Text | Mark]] = []
    pos = 0
    for mark in MARK.finditer(payload):
        pairs.append((None, _text(payload[pos : mark.start()], escaped)))
        raw = mark.group()
        pairs.append((raw, Mark(text=" ") if raw.endswith("\n") else Mark(raw.startswith("</"))))
        pos = mark.end()
    pairs.append((None, _text(payload[pos:], escaped)))
    return with_slots([p for p in pairs if not (isinstance(p[1], Text) and not p[1].text)])


def _text(raw: str, escaped: bool) -> Text:
    return Text(html.unescape(raw) if escaped else raw)


def _write(payload: str, cue: list, new: list[str], escaped: bool) -> str:
    """The cue's new text, tags as written; its line breaks where the alignment put
    them, unless that leaves a line empty or wider than the payload's widest: then the
    text is re-wrapped into as many lines of about equal width."""
    strings = iter(new)
    joined = "".join(raw if raw is not None else _escape(next(strings), escaped) for raw, _ in cue)
    lines, source = NEWLINE.split(joined), NEWLINE.split(payload)
    blank = sum(not line.strip() for line in source)
    too_wide = max(map(_width, lines)) > max(map(_width, source))
    if len(lines) > 1 and (too_wide or sum(not line.strip() for line in lines) > blank):
        lines = wrap(" ".join(line.strip() for line in lines), len(lines))
    return ("\r\n" if "\r\n" in payload else "\n").join(lines)


def _width(line: str) -> int:
    return len(TAG.sub("", line))


def _escape(text: str, escaped: bool) -> str:
    return html.escape(text, quote=False) if escaped else text


def wrap(text: str, count: int) -> list[str]:
    """`text` in `count` lines (fewer if it has fewer words) of about equal width: each
    break at the space outside a tag nearest to its share of the visible characters."""
    visible, spaces, inside = 0, [], False  # spaces: (visible chars before, offset)
    for i, ch in enumerate(text):
        if ch in "<{":
            inside = True
        elif ch in ">}":
            inside = False
        elif ch == " " and not inside:
            spaces.append((visible, i))
        elif not inside:
            visible += 1
    breaks: list[int] = []
    for k in range(1, count):
        later = [(v, i) for v, i in spaces if not breaks or i > breaks[-1]]
        if not later:
            break
        breaks.append(min(later, key=lambda s: abs(s[0] - visible * k / count))[1])
    bounds = [-1, *breaks, len(text)]
    lines = [text[a + 1 : b].strip(" ") for a, b in zip(bounds, bounds[1:], strict=False)]
    return [line for line in lines if line] or [""]

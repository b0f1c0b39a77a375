"""Inline formatting put back around the words it covered, by the model's alignments.

Every text format meets the model here. A unit (an HTML block, a Word or slide
paragraph, a table cell, a subtitle, an XLIFF segment) is a list of items in document
order: `Text`s, its translatable text in pieces (a run, a text node, the text between
two tags), and `Mark`s, what sits between them and is kept as it is (a tag, a tab, a
line break, a footnote's anchor). The Texts joined (with the Marks' own characters) are
the unit's plain text, which `nmt.text.documents` translates a line at a time (each
sentence, each window), all units of a file in one batch. `translate_units` then cuts
the translation back into one string per Text:

- a Mark lands, by the alignment, before the first target piece aligned to a source
  piece after it (a closing one: after the last target piece aligned to a source piece
  before it), never before a Mark or Text that came earlier;
- between two Texts with no Mark between them (two runs) the cut is made both ways and
  what lies between (unaligned words, spaces) goes to the second Text if its source
  began with a space, else to the first;
- a cut inside a source piece (a run boundary inside a word) lands at the same
  fraction of what that piece was translated into, and a cut with spaces between it
  and the piece before (after) it takes as many of the spaces after (before) that
  piece's target: so a translator that changes nothing gives every Text back exactly;
- a Mark with a line break ("\\n") ends a line: each side is translated on its own; a
  Mark with other whitespace (a tab, ODF's `text:s`) is a space in the plain text, and
  spaces the translation puts where it lands are dropped (it keeps its own);
- text that lands between two Marks with no Text between them goes to the Text before
  them (after them, if none): nothing of the translation is ever dropped but spaces.

Approximate: the alignments are the model's attention, not a word aligner's. Where a
translation's pieces cannot be found in its text (SentencePiece normalized it), the
cuts of that sentence go by proportion instead.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from nmt.text.documents import WORD_START, translate_parts
from nmt.translate import Translator


@dataclass(frozen=True)
class Text:
    """Translatable text of a unit, as a reader sees it (entities resolved)."""

    text: str


@dataclass(frozen=True)
class Mark:
    """Something kept in place between Texts; `text` is its share of the plain text:
    "" none, "\\n" a line break, other whitespace a space it stands for."""

    closing: bool = False  # an end tag: it goes after the words before it
    text: str = ""


Item = Text | Mark


def plain(unit: Sequence[Item]) -> str:
    return "".join(item.text for item in unit)


def translate_units(
    translator: Translator, units: Sequence[Sequence[Item]], **options
) -> list[list[str] | None]:
    """Each unit's new Text strings, in order (None: nothing in it was translated, keep
    it as it is); `options`: `nmt.text.documents.translate_parts`', one best each. All
    units' lines go through the model as one stream of batches."""
    lines_of = [plain(unit).split("\n") for unit in units]
    lines = [line for unit_lines in lines_of for line in unit_lines]
    found = translate_parts(translator, lines, **{**options, "nbest": 1})
    out = []
    for unit, plain_lines in zip(units, lines_of, strict=True):
        translated = [_line(translator, next(found)) for _ in plain_lines]
        if all(text is None for text, _ in translated):
            out.append(None)
        else:
            out.append(_cut(unit, plain_lines, translated))
    return out


def _line(translator: Translator, parts) -> tuple[str | None, list]:
    """A line's translation (None: all of it passed through), and how its source offsets
    map: [(source start, source end, output start, mapper; None: copied as it is)]."""
    out, mapping, pos, translated = "", [], 0, False
    for part, hyps in parts:
        text = part.text if hyps is None else hyps[0].text
        mapper = None if hyps is None else _mapper(translator, part.text, hyps[0])
        translated |= hyps is not None
        text_at, tail_at = pos + len(part.lead), pos + len(part.lead) + len(part.text)
        mapping.append((pos, text_at, len(out), None))
        mapping.append((text_at, tail_at, len(out) + len(part.lead), mapper))
        mapping.append((tail_at, tail_at + len(part.trail), len(out + part.lead + text), None))
        out += part.lead + text + part.trail
        pos = tail_at + len(part.trail)
    return (out if translated else None), mapping


def _mapper(translator: Translator, source: str, hyp):
    """(offset in source, closing) -> offset in hyp.text, by the alignment (the module's
    rules)."""
    text = hyp.text
    src = _spans(translator.src_tok.pieces(source), source)
    tgt = _spans(translator.tgt_tok.id_to_piece(list(hyp.tokens)), text)
    if src is None or tgt is None or len(hyp.alignment) != len(tgt):
        return lambda c, closing: round(c / max(len(source), 1) * len(text))
    links = [(src[i], tgt[j]) for j, i in enumerate(hyp.alignment) if 0 <= i < len(src)]

    def place(c: int, closing: bool) -> int:
        inside = [(s, t) for s, t in links if s[0] < c < s[1]]
        if inside:  # the same fraction of what the cut piece became
            (s0, s1), lo, hi = (
                inside[0][0],
                min(t[0] for _, t in inside),
                max(t[1] for _, t in inside),
            )
            return lo + round((c - s0) / (s1 - s0) * (hi - lo))
        if closing:  # after the last target piece of a source piece before c,
            at = max((t[1] for s, t in links if s[1] <= c), default=0)
            spaces = c - max((s[1] for s in src if s[1] <= c), default=0)
            while spaces and at < len(text) and text[at].isspace():  # and the spaces
                at, spaces = at + 1, spaces - 1  # the source has before c
            return at
        at = min((t[0] for s, t in links if s[0] >= c), default=len(text))
        spaces = min((s[0] for s in src if s[0] >= c), default=len(source)) - c
        while spaces and at > 0 and text[at - 1].isspace():
            at, spaces = at - 1, spaces - 1
        return at

    return place


def _spans(pieces: list[str], text: str) -> list[tuple[int, int]] | None:
    """Each piece's (start, end) in `text`; None where a piece is not found there."""
    spans, pos = [], 0
    for piece in pieces:
        core = piece.replace(WORD_START, " ").lstrip()
        while pos < len(text) and text[pos].isspace() and piece.startswith(WORD_START):
            pos += 1
        if not text.startswith(core, pos):
            return None
        spans.append((pos, pos + len(core)))
        pos += len(core)
    return spans


class _Where:
    """Source offsets of a unit's plain text -> offsets in its translation."""

    def __init__(self, plain_lines: list[str], translated: list):
        pairs = zip(translated, plain_lines, strict=True)
        self.out_lines = [t if t is not None else p for (t, _), p in pairs]
        self.text = "\n".join(self.out_lines)
        self.src_starts = list(itertools.accumulate([0] + [len(p) + 1 for p in plain_lines]))
        self.out_starts = list(itertools.accumulate([0] + [len(t) + 1 for t in self.out_lines]))
        self.translated = translated

    def __call__(self, c: int, closing: bool) -> int:
        line = min(bisect.bisect_right(self.src_starts, c) - 1, len(self.out_lines) - 1)
        text, mapping = self.translated[line]
        return self.out_starts[line] + _map(c - self.src_starts[line], mapping, closing, text)

    def line_break(self, c: int) -> tuple[int, int]:
        """The "\\n" at source offset c: (end of its line, start of the next) in the output."""
        line = bisect.bisect_right(self.src_starts, c) - 1
        return self.out_starts[line + 1] - 1, self.out_starts[line + 1]


def _map(c: int, mapping: list, closing: bool, text: str | None) -> int:
    if text is None:  # the line passed through: offsets are the source's
        return c
    for src_start, src_end, out_start, mapper in mapping:
        if src_start <= c < src_end or (c == src_end and closing):
            return out_start + (c - src_start if mapper is None else mapper(c - src_start, closing))
    return len(text)


def _cut(unit: Sequence[Item], plain_lines: list[str], translated: list) -> list[str]:
    """The translation cut into one string per Text of `unit` (the module's rules)."""
    where = _Where(plain_lines, translated)
    out = where.text
    spans: list[list[int]] = []  # per Text: [start, end) in `out`
    before: list[str] = []  # text that landed before the first Text
    after: dict[int, str] = {}  # per Text: text that landed after it, between Marks
    pos, c, last = 0, 0, None  # pos: where the previous item ended in `out`
    for item in unit:
        if isinstance(item, Text):
            if isinstance(last, Text):  # two runs: cut both ways, then settle the gap
                close = max(where(c, True), pos)
                opening = max(where(c, False), close)
                pos = close if item.text[:1].isspace() else opening
                spans[-1][1] = pos
            spans.append([pos, -1])
            c += len(item.text)
        else:
            if item.text == "\n":
                start, end = where.line_break(c)
            else:
                start = where(c, item.closing if not item.text else True)
                end = where(c + len(item.text), False) if item.text else start
            start = max(start, pos)
            end = max(end, start)
            if item.text and out[start:end].strip():  # words, not spaces: they stay
                end = start
            if isinstance(last, Text):
                spans[-1][1] = start
            else:
                _orphan(out[pos:start], spans, before, after)
            pos = end
            c += len(item.text)
        last = item
    if isinstance(last, Text):
        spans[-1][1] = len(out)
    else:
        _orphan(out[pos:], spans, before, after)
    texts = [out[a:b] + after.get(k, "") for k, (a, b) in enumerate(spans)]
    if texts and before:
        texts[0] = "".join(before) + texts[0]
    return texts


def _orphan(text: str, spans: list, before: list[str], after: dict[int, str]) -> None:
    """Text between two Marks with no Text between them: to the Text before them, or
    (none yet) to the first one."""
    if not text:
        return
    if spans:
        after[len(spans) - 1] = after.get(len(spans) - 1, "") + text
    else:
        before.append(text)


def with_slots(pairs: Sequence[tuple[object, Item]]) -> list[tuple[object | None, Item]]:
    """(what it stands for, item) pairs with (None, Text("")) between two Marks and at
    either end next to a Mark: for formats where text may stand anywhere between tags
    (HTML, Markdown, XML mixed content), so that words land where the alignment puts
    them, not in the run before."""
    out: list[tuple[object | None, Item]] = []
    for pair in pairs:
        if isinstance(pair[1], Mark) and (not out or isinstance(out[-1][1], Mark)):
            out.append((None, Text("")))
        out.append(pair)
    if not out or isinstance(out[-1][1], Mark):
        out.append((None, Text("")))
    return out

"""Markdown: the text of paragraphs, headings, list items, block quotes and table cells
translated, emphasis and links placed by the alignments; everything else is kept byte
for byte: front matter, code blocks and fences, inline code, HTML, link and image
targets, autolinks, images (their alt text too), reference definitions, the markers
and line prefixes of every block.

markdown-it-py (CommonMark, with GFM's tables and strikethrough) parses the file; its
tokens give each block's lines and, inline, the text between markers. The source is
never re-rendered: each text token is found in the source (markers and link targets
are skipped by CommonMark's own link grammar, `markdown_it.helpers`) and only the
translated texts are replaced there, escaped where a translation's character would
start markup. A soft line break stands for a space and lands where the alignment puts
it, a hard one ends a line. A block whose text cannot be found in the source (tab
stops expanded by the parser) is kept untranslated and counted in a warning.
"""

from __future__ import annotations

import logging
import re

from markdown_it import MarkdownIt
from markdown_it.helpers import parseLinkDestination, parseLinkTitle

from nmt.text.placement import Mark, Text, translate_units

log = logging.getLogger(__name__)
FRONT = re.compile(r"(---|\+\+\+)[ \t]*\r?\n.*?^(?:\1|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S | re.M)
SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
LINE_START = re.compile(r"^([#>=+-])")
NUMBERED = re.compile(r"^(\d+)([.)])")


def translate(translator, text: str, name: str, *, fmt: str, files, **options) -> str:
    front = FRONT.match(text)
    start = front.end() if front else 0
    body = text[start:]
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.disable("text_join")  # escapes and entities stay tokens of their own
    lines = body.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    blocks, lost, table_cursor = [], 0, {}
    for token in md.parse(body):
        if token.type == "inline" and token.map and token.children:
            block = _block(token, lines, starts, table_cursor)
            lost += block is None
            if block:
                blocks.append(block)
    if lost:
        log.warning("%s: %d blocks kept untranslated: their text was not found", name, lost)
    texts = translate_units(translator, [[item for _, item in b] for b in blocks], **options)
    edits = []  # (start, end, new text) in body
    for block, new in zip(blocks, texts, strict=True):
        if new is not None:
            found = [(span, item) for span, item in block if isinstance(item, Text)]
            for ((a, b, first), item), s in zip(found, new, strict=True):
                edits.append((a, b, body[a:b] if s == item.text else _escaped(s, first)))
    out, pos = [text[:start]], 0
    for a, b, new in sorted(edits):
        out += [body[pos:a], new]
        pos = b
    return "".join(out) + body[pos:]


def _block(token, lines: list[str], starts: list[int], table_cursor: dict) -> list | None:
    """The block's (source span in the body, item) pairs, a Text wherever text may
    stand; None where its text cannot be found in the source."""
    content = token.content
    at = []  # per content line: where it starts in the body
    for j, piece in enumerate(content.split("\n")):
        row = token.map[0] + j
        if row >= len(lines):
            return None
        source = lines[row].rstrip("\r\n")
        if token.map[1] - token.map[0] == 1 and "|" in source:  # table cells share a row
            col = source.find(piece, table_cursor.get(row, 0))
            table_cursor[row] = col + len(piece)
        else:
            col = source.rfind(piece)  # the content ends where its line does
        if col < 0:
            return None
        at.append(starts[row] + col)
    line_starts = [0]
    for piece in content.split("\n")[:-1]:
        line_starts.append(line_starts[-1] + len(piece) + 1)
    pairs = _pairs(token.children, content)
    if pairs is None:
        return None

    def source(c: int) -> int:
        j = max(i for i, s in enumerate(line_starts) if s <= c)
        return at[j] + c - line_starts[j]

    starts_line = [a == 0 or content[a - 1] == "\n" for (a, _), _ in pairs]
    return [
        ((source(a), source(b), first), item)
        for ((a, b), item), first in zip(pairs, starts_line, strict=True)
    ]


def _pairs(children, content: str) -> list | None:
    """(span in content, item) for each child; adjacent texts merged, an empty Text
    between two Marks and at either end next to one."""
    pairs: list = []
    pos, skip = 0, False
    for token in children:
        kind = token.type
        if skip:  # inside an autolink: its text is its address, kept
            skip = kind != "link_close"
            continue
        if kind in ("text", "text_special"):
            raw = token.content if kind == "text" else token.markup
            a = content.find(raw, pos)
            if a < 0:
                return None
            if pairs and isinstance(pairs[-1][1], Text) and pairs[-1][0][1] == a:
                (a0, _), last = pairs.pop()
                pairs.append(((a0, a + len(raw)), Text(last.text + token.content)))
            else:
                pairs.append(((a, a + len(raw)), Text(token.content)))
            pos = a + len(raw)
            continue
        end = _end(token, content, pos)
        if end is None:
            return None
        a, pos = end
        skip = kind == "link_open" and token.markup == "autolink"
        pairs.append(((a, pos), _mark(token)))
    return _with_slots(pairs)


def _mark(token) -> Mark:
    if token.type == "softbreak":
        return Mark(text=" ")
    if token.type == "hardbreak":
        return Mark(text="\n")
    closing = token.type.endswith("_close") or token.content.startswith("</")
    return Mark(closing=closing and token.markup != "autolink")


def _end(token, content: str, pos: int) -> tuple[int, int] | None:
    """Where the token's source starts and ends in `content`, from `pos` on."""
    kind = token.type
    if kind in ("softbreak", "hardbreak"):
        a = content.find("\n", pos)
        b = a + 1
        while b < len(content) and content[b] in " \t":
            b += 1
        return (pos, b) if a >= 0 else None
    if kind == "code_inline":
        a = content.find(token.markup, pos)
        b = _closing_ticks(content, a + len(token.markup), token.markup) if a >= 0 else -1
        return (a, b) if b >= 0 else None
    if kind == "link_open":
        a = content.find("<" if token.markup == "autolink" else "[", pos)
        b = content.find(">", a) + 1 if token.markup == "autolink" else a + 1
        return (a, b) if a >= 0 and b > 0 else None
    if kind == "link_close":
        return pos, _link_tail(content, content.find("]", pos))
    if kind == "image":
        a = content.find("![", pos)
        return (a, _link_tail(content, _bracket_end(content, a + 1))) if a >= 0 else None
    raw = token.content if kind == "html_inline" else token.markup
    a = content.find(raw, pos) if raw else -1
    return (a, a + len(raw)) if a >= 0 else None


def _closing_ticks(content: str, start: int, ticks: str) -> int:
    """The end of the backtick run as long as `ticks` that closes a code span."""
    for run in re.finditer(r"`+", content[start:]):
        if len(run.group()) == len(ticks):
            return start + run.end()
    return -1


def _bracket_end(content: str, at: int) -> int:
    """The "]" that closes the "[" at `at` (backslash escapes and nesting counted)."""
    depth, i = 0, at
    while i < len(content):
        if content[i] == "\\":
            i += 2
            continue
        depth += {"[": 1, "]": -1}.get(content[i], 0)
        if depth == 0:
            return i
        i += 1
    return len(content)


def _link_tail(content: str, at: int) -> int:
    """The end of a link's "](destination "title")", "][label]" or "]" at `at`."""
    if at < 0:
        return len(content)
    if content.startswith("](", at):
        pos = _spaces(content, at + 2)
        dest = parseLinkDestination(content, pos, len(content))
        pos = _spaces(content, dest.pos if dest.ok else pos)
        title = parseLinkTitle(content, pos, len(content))
        pos = _spaces(content, title.pos if title.ok else pos)
        return pos + 1 if content.startswith(")", pos) else pos
    if content.startswith("][", at):
        end = content.find("]", at + 2)
        return end + 1 if end >= 0 else len(content)
    return at + 1


def _spaces(content: str, pos: int) -> int:
    while pos < len(content) and content[pos] in " \t\n":
        pos += 1
    return pos


def _with_slots(pairs: list) -> list:
    out: list = []
    for span, item in pairs:
        if isinstance(item, Mark) and (not out or isinstance(out[-1][1], Mark)):
            at = out[-1][0][1] if out else span[0]
            out.append(((at, at), Text("")))
        out.append((span, item))
    if not out or isinstance(out[-1][1], Mark):
        at = out[-1][0][1] if out else 0
        out.append(((at, at), Text("")))
    return out


def _escaped(new: str, line_start: bool) -> str:
    """A translated text as Markdown: characters that would start markup escaped (at
    the start of a line, those that would start a block too)."""
    new = SPECIAL.sub(r"\\\1", new)
    if line_start:
        new = NUMBERED.sub(r"\1\\\2", LINE_START.sub(r"\\\1", new))
    return new

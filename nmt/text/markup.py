"""HTML documents: their text translated, their markup kept as it was written.

The page is read by Python's own HTML parser (`html.parser`) into markup and text.
Every tag, attribute, comment, declaration and entity of untranslated text is written
back byte for byte, in its order, so the page's tree is the same; `<script>`,
`<style>`, `<code>` and the other raw-text elements are never translated.

Text is translated a block at a time: the text between two block-level tags (`<p>`,
`<li>`, `<td>`, ...), inline markup (`<b>`, `<a href>`, `<br>`) included, so a
sentence keeps its context across its inline tags. Each line of a block (so `<pre>`
keeps its line breaks) goes through `nmt.text.documents` (sentences, windows, nothing
invented), all blocks of a page in one batch. The inline tags are then put back into
the translation by the alignments: an opening tag before the first target piece
aligned to a source piece after it, a closing tag after the last one aligned to a
source piece before it, every tag in its original order.

Approximate: the attention's alignments are those of the model, not of a word aligner,
so a tag may wrap a word more or less than its counterpart; where a translation's
pieces cannot be found in its text (SentencePiece normalized the text), the tags of
that sentence go by proportion instead. Entities inside translated text come back as
the characters they stand for, escaped where HTML needs it.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from html.parser import HTMLParser

from nmt.text.documents import WORD_START, translate_parts
from nmt.translate import Translator

UNTRANSLATED = {"script", "style", "code", "kbd", "samp", "var", "textarea", "template"}
INLINE = {
    *("a", "abbr", "b", "bdi", "bdo", "br", "cite", "code", "data", "dfn", "em", "font", "i"),
    *("img", "kbd", "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup"),
    *("time", "u", "var", "wbr"),
}


@dataclass
class _Node:
    raw: str  # the source, as written
    text: bool = False  # translatable text; else markup
    tag: str = ""  # for tags: the name
    closing: bool = False  # an end tag (placed after what it closes)


class _Nodes(HTMLParser):
    """The page as `_Node`s in document order; their raws joined are the page."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.nodes: list[_Node] = []
        self.raw_depth = 0  # inside script, style, code...: text stays as it is

    def _text(self, raw: str) -> None:
        if self.raw_depth:
            self.nodes.append(_Node(raw))
        elif self.nodes and self.nodes[-1].text:
            self.nodes[-1].raw += raw
        else:
            self.nodes.append(_Node(raw, text=True))

    def handle_starttag(self, tag, attrs):
        self.nodes.append(_Node(self.get_starttag_text(), tag=tag))
        self.raw_depth += tag in UNTRANSLATED

    def handle_startendtag(self, tag, attrs):
        self.nodes.append(_Node(self.get_starttag_text(), tag=tag))

    def parse_endtag(self, i):  # html.parser's own step, to keep the tag as written
        self.end_tag = ""
        j = super().parse_endtag(i)
        if j > i:
            self.nodes.append(_Node(self.rawdata[i:j], tag=self.end_tag, closing=True))
        return j

    def handle_endtag(self, tag):
        self.end_tag = tag
        if tag in UNTRANSLATED and self.raw_depth:
            self.raw_depth -= 1

    def handle_data(self, data):
        self._text(data)

    def handle_entityref(self, name):
        self._text(f"&{name};")

    def handle_charref(self, name):
        self._text(f"&#{name};")

    def handle_comment(self, data):
        self.nodes.append(_Node(f"<!--{data}-->", tag="!--"))

    def handle_decl(self, decl):
        self.nodes.append(_Node(f"<!{decl}>", tag="!decl"))

    def handle_pi(self, data):
        self.nodes.append(_Node(f"<?{data}>", tag="!pi"))

    def unknown_decl(self, data):
        self.nodes.append(_Node(f"<![{data}]>", tag="!decl"))


def translate_html(translator: Translator, page: str, **options) -> str:
    """`page` with its text translated (`options`: `nmt.documents.translate_parts`', one
    best translation each) and all its markup kept."""
    parser = _Nodes()
    parser.feed(page)
    parser.close()
    blocks = [list(b) for _, b in itertools.groupby(parser.nodes, _inline)]
    plains = [_plain(block).split("\n") for block in blocks]  # each block's lines of text
    lines = [line for p in plains for line in p]
    found = translate_parts(translator, lines, **{**options, "nbest": 1})
    out = []
    for block, plain_lines in zip(blocks, plains, strict=True):
        translated = [_line(translator, next(found)) for _ in plain_lines]
        if all(text is None for text, _ in translated):  # no text, or all passed through
            out.append("".join(node.raw for node in block))
        else:
            out.append(_place(block, plain_lines, translated))
    return "".join(out)


def _inline(node: _Node) -> bool:
    """Whether the node goes with the text around it (else it ends a block)."""
    return node.text or node.tag in INLINE or node.tag == "!--" or not node.tag


def _plain(block: list[_Node]) -> str:
    return "".join(html.unescape(node.raw) for node in block if node.text)


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
    """(offset in source, closing) -> offset in hyp.text, by the alignment."""
    src = _spans(translator.src_tok.pieces(source), source)
    tgt = _spans(translator.tgt_tok.id_to_piece(list(hyp.tokens)), hyp.text)
    if src is None or tgt is None or len(hyp.alignment) != len(tgt):
        return lambda c, closing: round(c / max(len(source), 1) * len(hyp.text))
    links = [(src[i], tgt[j]) for j, i in enumerate(hyp.alignment) if 0 <= i < len(src)]

    def place(c: int, closing: bool) -> int:
        if closing:  # after the last target piece of a source piece before c
            return max((t[1] for s, t in links if s[1] <= c), default=0)
        return min((t[0] for s, t in links if s[0] >= c), default=len(hyp.text))

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


def _place(block: list[_Node], plain_lines: list[str], translated: list) -> str:
    """The block's translation (`translated`: `_line`'s, one per line of its text) with
    its markup put back, every node in its order."""
    out_lines = [t or p for (t, _), p in zip(translated, plain_lines, strict=True)]
    out_text = "\n".join(out_lines)
    src_starts = list(itertools.accumulate([0] + [len(p) + 1 for p in plain_lines]))
    out_starts = list(itertools.accumulate([0] + [len(t) + 1 for t in out_lines]))
    pieces, c, cursor = [], 0, 0  # c: offset in the block's plain text
    for node in block:
        if node.text:
            c += len(html.unescape(node.raw))
            continue
        line = max(i for i, start in enumerate(src_starts[:-1]) if start <= c)
        text, mapping = translated[line]
        where = out_starts[line] + _map(c - src_starts[line], mapping, node.closing, text)
        where = max(where, cursor)  # never before a node that came earlier
        pieces += [_escape(out_text[cursor:where]), node.raw]
        cursor = where
    pieces.append(_escape(out_text[cursor:]))
    return "".join(pieces)


def _map(c: int, mapping: list, closing: bool, text: str | None) -> int:
    if text is None:  # the line passed through: offsets are the source's
        return c
    for src_start, src_end, out_start, mapper in mapping:
        if src_start <= c < src_end or (c == src_end and closing):
            return out_start + (c - src_start if mapper is None else mapper(c - src_start, closing))
    return len(text)


def _escape(text: str) -> str:
    return html.escape(html.unescape(text), quote=False)

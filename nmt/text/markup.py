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
the translation by the alignments, as every format's inline formatting is
(`nmt.text.placement`): an opening tag before the first target piece aligned to a
source piece after it, a closing tag after the last one aligned to a source piece
before it, every tag in its original order. Entities inside translated text come back
as the characters they stand for, escaped where HTML needs it. `HtmlPage` reads a page
into units and writes it back, for formats that hold HTML (EPUB).
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from html.parser import HTMLParser

from nmt.text.placement import Mark, Text, translate_units, with_slots
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
    """`page` with its text translated (`options`: `nmt.text.documents.translate_parts`',
    one best translation each) and all its markup kept."""
    read = HtmlPage(page)
    return read.write(translate_units(translator, read.units, **options))


class HtmlPage:
    """A page read into units (`nmt.text.placement`): one per block with text, its tags
    Marks, an empty Text between two tags so that words may land there as they do in
    the source; `write` puts the translated Texts back between the tags as written."""

    def __init__(self, page: str):
        parser = _Nodes()
        parser.feed(page)
        parser.close()
        self.blocks = [list(b) for _, b in itertools.groupby(parser.nodes, _inline)]
        self.layouts = [_layout(block) for block in self.blocks]
        self.units = [[item for _, item in layout] for layout in self.layouts if layout]

    def write(self, texts: list[list[str] | None]) -> str:
        found, out = iter(texts), []
        for block, layout in zip(self.blocks, self.layouts, strict=True):
            new = next(found) if layout else None
            if new is None:  # no text, or all of it passed through
                out.append("".join(node.raw for node in block))
                continue
            strings = iter(new)
            for node, item in layout:
                out.append(_escape(next(strings)) if isinstance(item, Text) else node.raw)
        return "".join(out)


def _inline(node: _Node) -> bool:
    """Whether the node goes with the text around it (else it ends a block)."""
    return node.text or node.tag in INLINE or node.tag == "!--" or not node.tag


def _layout(block: list[_Node]) -> list[tuple[_Node | None, Text | Mark]]:
    """The block's nodes as placement items (empty if it has no text to translate)."""
    if not any(node.text for node in block):
        return []
    return with_slots(
        [
            (node, Text(html.unescape(node.raw)) if node.text else Mark(closing=node.closing))
            for node in block
        ]
    )


def _escape(text: str) -> str:
    return html.escape(text, quote=False)

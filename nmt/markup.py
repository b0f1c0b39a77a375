"""HTML documents: their text translated, their markup kept as it was written.

The page is read by Python's own HTML parser (`html.parser`, which browsers' rules for
broken markup guide too) into markup and text nodes. Every tag, attribute, comment,
declaration and entity-only text is written back byte for byte; `<script>`, `<style>`,
`<code>` and other raw-text content is never translated. Each text node goes through
`nmt.documents` (sentences split, long ones cut, nothing invented), all nodes of a
page in one batch; in `<pre>` and in any node each line is translated on its own, so
line breaks stay where they were, and so do leading and trailing spaces.

Approximate: a text node is the unit. Inline markup inside a sentence
(`I saw <b>a dog</b> today`) keeps its place and what it wraps, because each node is
translated on its own, at the cost of the sentence's context across the tags (as
LibreTranslate's HTML mode does); entities inside a translated node come back as the
characters they stand for, escaped where HTML needs it.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser

from nmt.documents import Summary, translate_lines
from nmt.translate import Translator

UNTRANSLATED = {"script", "style", "code", "kbd", "samp", "var", "textarea", "template"}


class _Nodes(HTMLParser):
    """The page as a list of ("markup" | "text", raw source) in document order."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.nodes: list[list[str]] = []
        self.raw_depth = 0  # inside script, style, code...: text stays as it is

    def _add(self, kind: str, raw: str) -> None:
        if self.nodes and self.nodes[-1][0] == kind == "text":
            self.nodes[-1][1] += raw
        else:
            self.nodes.append([kind, raw])

    def handle_starttag(self, tag, attrs):
        self._add("markup", self.get_starttag_text())
        if tag in UNTRANSLATED:
            self.raw_depth += 1

    def handle_startendtag(self, tag, attrs):
        self._add("markup", self.get_starttag_text())

    def parse_endtag(self, i):  # html.parser's own step, to keep the tag as written
        j = super().parse_endtag(i)
        if j > i:
            self._add("markup", self.rawdata[i:j])
        return j

    def handle_endtag(self, tag):
        if tag in UNTRANSLATED and self.raw_depth:
            self.raw_depth -= 1

    def handle_data(self, data):
        self._add("markup" if self.raw_depth else "text", data)

    def handle_entityref(self, name):
        self._add("markup" if self.raw_depth else "text", f"&{name};")

    def handle_charref(self, name):
        self._add("markup" if self.raw_depth else "text", f"&#{name};")

    def handle_comment(self, data):
        self._add("markup", f"<!--{data}-->")

    def handle_decl(self, decl):
        self._add("markup", f"<!{decl}>")

    def handle_pi(self, data):
        self._add("markup", f"<?{data}>")

    def unknown_decl(self, data):
        self._add("markup", f"<![{data}]>")


def translate_html(
    translator: Translator, page: str, *, summary: Summary | None = None, **options
) -> str:
    """`page` with every text node translated (`options` as `translate`'s, one best
    translation each) and all its markup kept."""
    parser = _Nodes()
    parser.feed(page)
    parser.close()
    texts = [html.unescape(raw) for kind, raw in parser.nodes if kind == "text"]
    lines = [line for text in texts for line in text.split("\n")]
    found = translate_lines(translator, lines, summary=summary, **{**options, "nbest": 1})
    out = []
    for kind, raw in parser.nodes:
        if kind == "markup":
            out.append(raw)
            continue
        translated = [next(found)[0].text for _ in html.unescape(raw).split("\n")]
        text = "\n".join(translated)
        if text == html.unescape(raw):  # passed through: its entities as they were
            out.append(raw)
        else:  # Multi30k's own text holds "&amp;": a model may write entities
            out.append(html.escape(html.unescape(text), quote=False))
    return "".join(out)

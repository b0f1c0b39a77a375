"""Reading a source document and its translation back with the format's own library (or
a real parser) and checking, node by node, that the translation kept the structure:
`compare` asserts that every text node with letters became `change(text)` and that
everything else is as it was, and returns how many text nodes it checked."""

from __future__ import annotations

import html
import io
import re
import zipfile
from collections.abc import Callable
from html.parser import HTMLParser

from lxml import etree

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
XHTML = "{http://www.w3.org/1999/xhtml}"
NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
TAG = re.compile(r"<[^<>\n]*>|\{\\[^{}\n]*\}")
CODE = re.compile(
    r"%(?:\([^)\s]*\))?[-+ #0]*(?:\d+|\*)?(?:\.\d+)?[a-zA-Z%]|\{[\w.\[\]]*\}|<[^<>]*>"
)
Change = Callable[[str], str]


def letters(text: str | None) -> bool:
    return any(c.isalpha() for c in text or "")


class Count:
    def __init__(self, change: Change):
        self.change, self.n = change, 0

    def text(self, source: str | None, out: str | None, translatable: bool) -> None:
        source, out = source or "", out or ""
        if translatable and letters(source):
            assert out == self.change(source), (source, out)
            self.n += 1
        else:
            assert out == source, (source, out)


def _ancestors(element):
    while element is not None:
        yield element
        element = element.getparent()


def _docx(element, which) -> bool:
    return which == "text" and element.tag == W + "t"


def _pptx(element, which) -> bool:
    return which == "text" and element.tag == A + "t"


def _odf(element, which) -> bool:
    owner = element if which == "text" else element.getparent()
    tags = {e.tag for e in _ancestors(owner)}
    return bool(tags & {TEXT + "p", TEXT + "h"}) and OFFICE + "annotation" not in tags


def _xhtml(element, which) -> bool:
    owner = element if which == "text" else element.getparent()
    tags = {etree.QName(e).localname for e in _ancestors(owner) if isinstance(e.tag, str)}
    return bool(tags & {"body", "title"}) and not tags & {"script", "style", "code"}


def _ncx(element, which) -> bool:
    return (
        which == "text"
        and element.tag == NCX + "text"
        and element.getparent().tag == NCX + "navLabel"
    )


def trees(a, b, count: Count, translatable) -> None:
    assert (a.tag, dict(a.attrib), len(a)) == (b.tag, dict(b.attrib), len(b)), (a.tag, b.tag)
    count.text(a.text, b.text, isinstance(a.tag, str) and translatable(a, "text"))
    for x, y in zip(a, b, strict=True):
        trees(x, y, count, translatable)
        count.text(x.tail, y.tail, translatable(x, "tail"))


ZIPPED = {  # format -> (member -> the rule for its text nodes, or None: kept byte for byte)
    "docx": lambda m: (
        _docx if re.fullmatch(r"word/(document|header\d*|footer\d*|footnotes)\.xml", m) else None
    ),
    "pptx": lambda m: (
        _pptx if re.fullmatch(r"ppt/(slides/slide|notesSlides/notesSlide)\d+\.xml", m) else None
    ),
    "odt": lambda m: _odf if m in ("content.xml", "styles.xml") else None,
    "odp": lambda m: _odf if m == "content.xml" else None,
    "epub": lambda m: _xhtml if m.endswith(".xhtml") else _ncx if m.endswith(".ncx") else None,
}


def compare(fmt: str, source: bytes, out: bytes, change: Change) -> int:
    count = Count(change)
    if fmt in ZIPPED:
        a, b = zipfile.ZipFile(io.BytesIO(source)), zipfile.ZipFile(io.BytesIO(out))
        assert [(i.filename, i.compress_type) for i in a.infolist()] == [
            (i.filename, i.compress_type) for i in b.infolist()
        ]
        for member in a.namelist():
            rule = ZIPPED[fmt](member)
            if rule is None:
                assert a.read(member) == b.read(member), member
            else:
                trees(
                    etree.fromstring(a.read(member)), etree.fromstring(b.read(member)), count, rule
                )
    else:
        globals()[f"_compare_{fmt}"](source.decode(), out.decode(), count)
    return count.n


def _compare_text(source: str, out: str, count: Count) -> None:
    a, b = source.splitlines(keepends=True), out.splitlines(keepends=True)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        count.text(x, y, True)


class Events(HTMLParser):
    """A page's tags and comments, and its text (script and style apart) per gap."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.events, self.texts, self.raw = [], [], False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.events.append(("start", tag, attrs))
        self.texts.append(None)
        self.raw = tag in ("script", "style", "code")

    def handle_endtag(self, tag):
        self.events.append(("end", tag))
        self.texts.append(None)
        self.raw = False

    def handle_startendtag(self, tag, attrs):
        self.events.append(("void", tag, attrs))
        self.texts.append(None)

    def handle_comment(self, data):
        self.events.append(("comment", data))

    def handle_data(self, data):
        if self.raw:
            self.events.append(("raw", data))
        elif self.texts and self.texts[-1] is not None:
            self.texts[-1] += data
        else:
            self.texts.append(data)


def _compare_html(source: str, out: str, count: Count) -> None:
    a, b = Events(source), Events(out)
    assert a.events == b.events and len(a.texts) == len(b.texts)
    for x, y in zip(a.texts, b.texts, strict=True):
        count.text(x, y, True)


def _md_tokens(page: str):
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    flat, texts = [], []
    for token in md.parse(page):
        for t in token.children or [token]:
            if t.type in ("text", "text_special") and not (
                flat and flat[-1][0] == "link_open" and flat[-1][1] == "autolink"
            ):
                if texts and flat and flat[-1] == ("text",):
                    texts[-1] += t.content
                else:
                    flat.append(("text",))
                    texts.append(t.content)
            else:
                flat.append(
                    (t.type, t.markup, t.content if t.type != "inline" else "", str(t.attrs))
                )
    return flat, texts


def _compare_md(source: str, out: str, count: Count) -> None:
    front = source.index("---", 3) + 3
    assert out[:front] == source[:front]
    (a, x), (b, y) = _md_tokens(source[front:]), _md_tokens(out[front:])
    assert a == b
    for s, o in zip(x, y, strict=True):
        count.text(s, o, True)


def _subtitle_text(content: str, escaped: bool) -> tuple[list[str], list[str], int]:
    """A cue's tags, its text between them (whitespace folded; VTT's entities read),
    its line count."""
    texts = [" ".join(t.split()) for t in TAG.split(content.replace("\n", " "))]
    texts = [html.unescape(t) for t in texts] if escaped else texts
    return TAG.findall(content), texts, content.count("\n") + 1


def _compare_cues(a: list, b: list, count: Count, escaped: bool = False) -> None:
    assert len(a) == len(b)
    for (key_a, content_a), (key_b, content_b) in zip(a, b, strict=True):
        assert key_a == key_b
        tags_a, texts_a, lines_a = _subtitle_text(content_a, escaped)
        tags_b, texts_b, lines_b = _subtitle_text(content_b, escaped)
        assert tags_a == tags_b and lines_a == lines_b, (content_a, content_b)
        for s, o in zip(texts_a, texts_b, strict=True):
            count.text(s, o, True)


def _compare_srt(source: str, out: str, count: Count) -> None:
    import srt

    def cues(text):
        return [((s.index, s.start, s.end, s.proprietary), s.content) for s in srt.parse(text)]

    _compare_cues(cues(source), cues(out), count)


def _compare_vtt(source: str, out: str, count: Count) -> None:
    import webvtt

    def cues(text):
        return [
            ((c.identifier, c.start, c.end), c.raw_text) for c in webvtt.from_string(text).captions
        ]

    assert "NOTE Ein Kommentar bleibt." in out
    _compare_cues(cues(source), cues(out), count, escaped=True)


def _compare_po(source: str, out: str, count: Count) -> None:
    import polib

    a, b = polib.pofile(source), polib.pofile(out)
    assert a.metadata == b.metadata and len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        same = (
            "msgid",
            "msgid_plural",
            "msgctxt",
            "comment",
            "tcomment",
            "occurrences",
            "flags",
            "obsolete",
        )
        assert [getattr(x, k) for k in same] == [getattr(y, k) for k in same]
        if x.obsolete or x.msgstr or any(x.msgstr_plural.values()):
            assert (x.msgstr, x.msgstr_plural) == (y.msgstr, y.msgstr_plural)
            continue
        sources = [x.msgid, x.msgid_plural] if x.msgid_plural else [x.msgid]
        outs = [y.msgstr_plural[0], y.msgstr_plural[1]] if x.msgid_plural else [y.msgstr]
        for s, o in zip(sources, outs, strict=True):
            assert CODE.findall(s) == CODE.findall(o)
            for part_s, part_o in zip(CODE.split(s), CODE.split(o), strict=True):
                count.text(part_s, part_o, True)


def _compare_xliff(source: str, out: str, count: Count) -> None:
    a, b = etree.fromstring(source.encode()), etree.fromstring(out.encode())
    ns = "{urn:oasis:names:tc:xliff:document:1.2}"
    for unit_a, unit_b in zip(a.iter(ns + "trans-unit"), b.iter(ns + "trans-unit"), strict=True):
        target_a, target_b = unit_a.find(ns + "target"), unit_b.find(ns + "target")
        if target_a is not None:  # already translated: kept
            assert etree.tostring(target_a) == etree.tostring(target_b)
            continue
        assert target_b.get("state") == "translated"
        made = unit_a.find(ns + "source")
        _same_but_text(made, target_b, count)
        unit_b.remove(target_b)
    assert etree.tostring(a, method="c14n") == etree.tostring(b, method="c14n")


def _same_but_text(source, target, count: Count) -> None:
    assert (len(source), [(c.tag, dict(c.attrib)) for c in source]) == (
        len(target),
        [(c.tag, dict(c.attrib)) for c in target],
    )
    count.text(source.text, target.text, True)
    for x, y in zip(source, target, strict=True):
        _same_but_text_inner(x, y, count)
        count.text(x.tail, y.tail, True)


def _same_but_text_inner(x, y, count: Count) -> None:
    assert (x.tag, dict(x.attrib), len(x)) == (y.tag, dict(y.attrib), len(y))
    count.text(x.text, y.text, etree.QName(x).localname in ("g", "mrk", "pc"))
    for c, d in zip(x, y, strict=True):
        _same_but_text_inner(c, d, count)
        count.text(c.tail, d.tail, True)

"""The translatable units of an XML part (Word, PowerPoint, OpenDocument, XLIFF, EPUB's
NCX), read and written with lxml, by a format's `Rules`.

A unit is an element (`w:p`, `a:p`, `text:p`, an XLIFF `target`). Its text is where the
format keeps text: in Office Open XML only the `w:t`/`a:t` elements (runs: Texts side by
side, their formatting in the run around them); in OpenDocument and XLIFF the mixed
content of the unit and of its inline wrappers (`text:span`, `<g>`: an opening and a
closing Mark around them, a Text in every place text can stand). Breaks, tabs and
spaces are Marks with their characters. Everything else inside a unit (an image, a
footnote's anchor, a field, an inline code) is a Mark kept whole; a unit inside it (the
paragraphs of a text box or a footnote) is a unit of its own. Nothing but the Texts'
`.text`/`.tail` strings is ever written, so the tree keeps every element and attribute.

Parsing never resolves entities nor reaches the network (a file from the server is
untrusted).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from nmt.text.formats import DocumentError
from nmt.text.placement import Item, Mark, Text

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
Slot = tuple[etree._Element, str]  # (element, "text" | "tail"): where a Text is written


@dataclass(frozen=True)
class Rules:
    units: frozenset[str]  # Clark names ({ns}local) of the unit elements
    text: frozenset[str] = frozenset()  # text only in these (w:t); empty: mixed content
    wrappers: frozenset[str] = frozenset()  # mixed content: inline elements with text
    marks: Mapping[str, Callable] = field(default_factory=dict)  # tag -> (element -> chars)
    hidden: frozenset[str] = frozenset()  # subtrees neither translated nor looked into


def parse(data: bytes, name: str) -> etree._Element:
    try:
        return etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as err:
        line = f" line {err.lineno}" if err.lineno else ""
        raise DocumentError(f"{name}{line}: not well-formed XML ({err.msg})") from None


def units_of(roots: list[etree._Element], rules: Rules) -> list[tuple[list[Item], list[Slot]]]:
    """Each unit under `roots` (none under a hidden element), in document order: its
    items and, for each of its Texts, where it is written."""
    found = []

    def visit(element) -> None:
        if not isinstance(element.tag, str) or element.tag in rules.hidden:
            return
        if element.tag in rules.units:
            found.append(_unit(element, rules))
        for child in element:
            visit(child)

    for root in roots:
        visit(root)
    return found


def _unit(element, rules: Rules) -> tuple[list[Item], list[Slot]]:
    pairs: list[tuple[Slot | None, Item]] = []
    mixed = not rules.text
    if mixed:  # a Text wherever text can stand: never two Marks side by side
        pairs.append(((element, "text"), Text(element.text or "")))
    _walk(element, rules, pairs, mixed)
    items = [item for _, item in pairs]
    return items, [slot for slot, item in pairs if isinstance(item, Text)]


def _walk(element, rules: Rules, pairs: list, mixed: bool) -> None:
    for child in element:
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag in rules.text:
            pairs.append(((child, "text"), Text(child.text or "")))
        elif tag in rules.marks:
            pairs.append((None, Mark(text=rules.marks[tag](child))))
        elif tag in rules.units or tag in rules.hidden or not tag:
            pairs.append((None, Mark()))  # a unit of its own, a comment, kept whole
        elif not mixed:
            _walk(child, rules, pairs, mixed)  # a run, a hyperlink: only its w:t count
        elif tag in rules.wrappers:
            pairs.append((None, Mark()))
            pairs.append(((child, "text"), Text(child.text or "")))
            _walk(child, rules, pairs, mixed)
            pairs.append((None, Mark(closing=True)))
        else:
            pairs.append((None, Mark()))  # an inline code, an image: kept whole
        if mixed:
            pairs.append(((child, "tail"), Text(child.tail or "")))


def write(slots: list[Slot], texts: list[str]) -> None:
    for (element, where), text in zip(slots, texts, strict=True):
        setattr(element, where, text or None)


PROLOG = re.compile(rb"(?:\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>))*\s*", re.S)


def serialize(root: etree._Element, original: bytes) -> bytes:
    """`root` with the original's prolog (declaration, doctype, comments) and trailing
    whitespace kept byte for byte."""
    encoding = root.getroottree().docinfo.encoding or "UTF-8"
    if encoding.upper().replace("-", "") != "UTF8":
        return etree.tostring(root.getroottree(), xml_declaration=True, encoding=encoding)
    body = original.removeprefix(b"\xef\xbb\xbf")
    prolog = original[: len(original) - len(body) + PROLOG.match(body).end()]
    trailing = original[len(original.rstrip()) :]
    return prolog + etree.tostring(root, encoding="UTF-8", xml_declaration=False) + trailing

"""XLIFF 1.2 and 2.0 (what CAT tools exchange): each unit's source translated into its
target, inline codes kept and placed by the alignments; ids, notes, alternatives,
attributes and the rest of the document kept.

Read and written with lxml (a real XML parser; XLIFF is plain XML, and translate-toolkit
would bring a large dependency for one format). A target that already has text is kept
unless `retranslate`. The target is the source's copy with its text replaced, so every
inline code (`<g>`, `<x/>`, `<ph>`, `<bpt>`/`<ept>`, 2.0's `<pc>`, `<ph/>`, `<sc/>`/`<ec/>`)
keeps its id and attributes: `<g>`, `<mrk>` and `<pc>` are wrappers whose text is
placed by the alignment, the others are kept whole. XLIFF 1.2: the target's `state` is
set to `translated` (`needs-review-translation` with `review`); 2.0: the segment's
`state` to `translated` (`initial` with `review`). Units marked translate="no" are kept.
"""

from __future__ import annotations

import copy

from lxml import etree

from nmt.text.formats import DocumentError
from nmt.text.formats.xmlunits import Rules, parse, serialize, units_of, write
from nmt.text.placement import translate_units

WRAPPERS = ("g", "mrk", "pc")


def translate(translator, text: str, name: str, *, fmt: str, files, **options) -> str:
    data = text.encode("utf-8")
    root = parse(data, name)
    if etree.QName(root).localname != "xliff":
        raise DocumentError(f"{name}: not an XLIFF document (its root is <{root.tag}>)")
    ns = etree.QName(root).namespace
    q = (lambda local: f"{{{ns}}}{local}") if ns else (lambda local: local)
    two = (root.get("version") or "").startswith("2")
    targets = []
    for holder in root.iter(q("segment") if two else q("trans-unit")):
        target = _target(holder, q, two, files.retranslate)
        if target is not None:
            targets.append((holder, target))
    rules = Rules(units=frozenset({q("target")}), wrappers=frozenset(q(w) for w in WRAPPERS))
    units = [units_of([target], rules)[0] for _, target in targets]
    texts = translate_units(translator, [items for items, _ in units], **options)
    for (_, slots), new in zip(units, texts, strict=True):
        if new is not None:
            write(slots, new)
    for holder, target in targets:
        if two:
            holder.set("state", "initial" if files.review else "translated")
        else:
            target.set("state", "needs-review-translation" if files.review else "translated")
    return serialize(root, data).decode("utf-8")


def _target(holder, q, two: bool, retranslate: bool):
    """The holder's target, made from its source (None: it has none to translate, or
    keeps its own)."""
    unit = holder.getparent() if two else holder
    source = holder.find(q("source"))
    if source is None or unit.get("translate") == "no":
        return None
    target = holder.find(q("target"))
    if (
        target is not None
        and not retranslate
        and ("".join(target.itertext()).strip() or len(target))
    ):
        return None
    made = copy.deepcopy(source)
    made.tag = q("target")
    if target is None:
        made.attrib.clear()
        for key in ("{http://www.w3.org/XML/1998/namespace}space",):
            if source.get(key):
                made.set(key, source.get(key))
        made.tail = source.tail
        source.addnext(made)
        return made
    target[:] = list(made)  # its own attributes kept, the source's content copied in
    target.text = made.text
    return target

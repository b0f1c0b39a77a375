"""PowerPoint .pptx: the text of every slide (its shapes, tables, groups) and of its
speaker notes translated a paragraph at a time, each run's formatting put back around
the words the model aligned to it; everything else kept.

python-pptx (the maintained library for .pptx) opens the package, checks that it is a
presentation and names its parts by content type; its own `save` re-serializes every
part, so the package is written again member by member (`nmt.text.formats.zipped`):
layouts, masters, themes, media, charts and metadata come back byte for byte. Layouts
and masters keep their placeholder prompts, which a slide show never shows.

In a paragraph (`a:p`) only `a:t` holds text (runs and fields); `a:br` ends a line
(each side translated on its own), and run properties stay where they are.
"""

from __future__ import annotations

import io

import pptx

from nmt.text.formats import DocumentError
from nmt.text.formats.xmlunits import Rules
from nmt.text.formats.zipped import open_zip, rewrite, translate_parts

A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
PRESENTATION = "application/vnd.openxmlformats-officedocument.presentationml."
TRANSLATED = {PRESENTATION + "slide+xml", PRESENTATION + "notesSlide+xml"}
RULES = Rules(
    units=frozenset({A + "p"}), text=frozenset({A + "t"}), marks={A + "br": lambda e: "\n"}
)


def translate(translator, data: bytes, name: str, *, fmt: str, files, **options) -> bytes:
    package = open_zip(data, name, "PowerPoint presentation")
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except Exception as err:  # python-pptx's own errors have no common base
        raise DocumentError(f"{name}: not a readable PowerPoint presentation ({err})") from None
    parts = {
        part.partname.lstrip("/"): RULES
        for part in presentation.part.package.iter_parts()
        if part.content_type in TRANSLATED
    }
    return rewrite(package, translate_parts(translator, package, parts, name, **options))

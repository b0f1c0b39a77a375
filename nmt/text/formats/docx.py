"""Word .docx: the text of the body, tables, headers, footers, footnotes, endnotes and
text boxes translated a paragraph at a time, each run's formatting put back around the
words the model aligned to it; everything else kept.

python-docx (the maintained library for .docx) opens the package, checks that it is a
Word document and names its parts by content type and relationship, so that headers,
footers and notes are found as Word links them. Its own `save` re-serializes every
part, so the package is written again member by member (`nmt.text.formats.zipped`):
styles, images, numbering, settings, comments and metadata come back byte for byte.

In a paragraph (`w:p`) only `w:t` holds text: a run's formatting (`w:rPr`) stays where
it is, and its `w:t` gets the words placed in it. Tabs are spaces kept in place, line
breaks (`w:br`, `w:cr`) end a line (each side translated on its own); field codes
(`w:instrText`), deleted text (`w:delText`), drawings and the footnote references are
untouched. Reviewers' comments are kept untranslated (they are about the source).
"""

from __future__ import annotations

import io

import docx

from nmt.text.formats import DocumentError
from nmt.text.formats.xmlunits import Rules
from nmt.text.formats.zipped import open_zip, rewrite, translate_parts

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml."
TRANSLATED = {WORD + kind for kind in ("document.main+xml", "header+xml", "footer+xml")} | {
    WORD + "footnotes+xml",
    WORD + "endnotes+xml",
}
RULES = Rules(
    units=frozenset({W + "p"}),
    text=frozenset({W + "t"}),
    marks={W + "tab": lambda e: "\t", W + "br": lambda e: "\n", W + "cr": lambda e: "\n"},
)


def translate(translator, data: bytes, name: str, *, fmt: str, files, **options) -> bytes:
    package = open_zip(data, name, "Word document")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as err:  # python-docx's own errors have no common base
        raise DocumentError(f"{name}: not a readable Word document ({err})") from None
    parts = {
        part.partname.lstrip("/"): RULES
        for part in document.part.package.iter_parts()
        if part.content_type in TRANSLATED
    }
    return rewrite(package, translate_parts(translator, package, parts, name, **options))

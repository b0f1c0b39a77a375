"""OpenDocument .odt and .odp: the paragraphs and headings of the body, its tables,
lists, frames, footnotes and (.odt) headers and footers, and of each slide and its
speaker notes (.odp), translated a paragraph at a time, spans and links put back
around the words the model aligned to them; everything else kept.

OpenDocument is XML in a zip, and read here with lxml (a real XML parser) rather than
odfpy, whose `save` re-serializes every member: the package is written again member by
member (`nmt.text.formats.zipped`), so styles, images, settings, metadata and the
manifest come back byte for byte, and only content.xml and styles.xml are re-written.
The tests make and open files with odfpy, the format's own library.

A paragraph's mixed content is its text: `text:span`, `text:a` and `text:meta` are
wrappers whose text is placed by the alignment; `text:s` (spaces) and `text:tab` are
spaces kept in place, `text:line-break` ends a line (each side translated on its own);
footnote anchors, frames, fields and bookmarks are kept whole, and the paragraphs of a
footnote or a text box are units of their own. Comments (`office:annotation`) and the
text of tracked deletions are kept untranslated.
"""

from __future__ import annotations

from lxml import etree

from nmt.text.formats import DocumentError
from nmt.text.formats.xmlunits import PARSER, Rules
from nmt.text.formats.zipped import open_zip, rewrite, translate_parts

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
MANIFEST = "{urn:oasis:names:tc:opendocument:xmlns:manifest:1.0}"
MIMETYPES = {
    "odt": "application/vnd.oasis.opendocument.text",
    "odp": "application/vnd.oasis.opendocument.presentation",
}
RULES = Rules(
    units=frozenset({TEXT + "p", TEXT + "h"}),
    wrappers=frozenset({TEXT + "span", TEXT + "a", TEXT + "meta"}),
    marks={
        TEXT + "s": lambda e: " " * int(e.get(TEXT + "c") or 1),
        TEXT + "tab": lambda e: "\t",
        TEXT + "line-break": lambda e: "\n",
    },
    hidden=frozenset({OFFICE + "annotation", TEXT + "tracked-changes"}),
)


def translate(translator, data: bytes, name: str, *, fmt: str, files, **options) -> bytes:
    kind = {"odt": "OpenDocument text", "odp": "OpenDocument presentation"}[fmt]
    package = open_zip(data, name, kind)
    members = set(package.namelist())
    mimetype = package.read("mimetype").decode("ascii", "replace") if "mimetype" in members else ""
    if mimetype.strip() != MIMETYPES[fmt] or "content.xml" not in members:
        raise DocumentError(f"{name}: not an {kind} (its mimetype is {mimetype.strip()!r})")
    _check_manifest(package, members, name)
    parts = {"content.xml": RULES}
    if fmt == "odt" and "styles.xml" in members:  # the master pages' headers and footers
        parts["styles.xml"] = RULES
    return rewrite(package, translate_parts(translator, package, parts, name, **options))


def _check_manifest(package, members: set[str], name: str) -> None:
    """Every file the manifest lists is in the package."""
    if "META-INF/manifest.xml" not in members:
        raise DocumentError(f"{name}: not an OpenDocument package (no META-INF/manifest.xml)")
    try:
        manifest = etree.fromstring(package.read("META-INF/manifest.xml"), PARSER)
    except etree.XMLSyntaxError as err:
        raise DocumentError(f"{name}: META-INF/manifest.xml line {err.lineno}: {err.msg}") from None
    for entry in manifest.iter(MANIFEST + "file-entry"):
        path = entry.get(MANIFEST + "full-path") or ""
        if path not in ("/", "mimetype") and not path.endswith("/") and path not in members:
            raise DocumentError(f"{name}: the manifest lists {path}, which is not in the file")

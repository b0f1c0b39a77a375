"""EPUB e-books: every XHTML document of the book (chapters, the navigation page)
translated through the HTML path (`nmt.text.markup`: blocks, inline tags placed by the
alignments), and the table of contents' labels in toc.ncx; everything else kept (the title and the
other metadata too).

EbookLib (the maintained library for EPUB 2 and 3) reads the book and checks it: a
manifest that names a part the zip lacks is an error naming the part. Its `write`
rebuilds the package files (OPF, NCX) from its own model, so the book is written again
member by member (`nmt.text.formats.zipped`): the OPF with its metadata, the styles,
fonts and images come back byte for byte, `mimetype` first and stored.
"""

from __future__ import annotations

import io
import posixpath
import warnings

import ebooklib
from ebooklib import epub

from nmt.text.formats import DocumentError, decode
from nmt.text.formats.xmlunits import Rules, parse, serialize, units_of, write
from nmt.text.formats.zipped import open_zip, rewrite
from nmt.text.markup import HtmlPage
from nmt.text.placement import translate_units

NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
# the chapters' labels; the title and author are metadata, kept as the OPF keeps them
NCX_RULES = Rules(
    units=frozenset({NCX + "text"}), hidden=frozenset({NCX + "docTitle", NCX + "docAuthor"})
)
CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"


def translate(translator, data: bytes, name: str, *, fmt: str, files, **options) -> bytes:
    package = open_zip(data, name, "EPUB book")
    try:
        with warnings.catch_warnings():  # EbookLib warns about its own future defaults
            warnings.simplefilter("ignore")
            book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": False})
    except KeyError as err:  # a part the manifest names is not in the zip
        raise DocumentError(f"{name}: the manifest names {err.args[0]}".rstrip(".")) from None
    except Exception as err:  # EbookLib's own errors have no common base
        raise DocumentError(f"{name}: not a readable EPUB book ({err})") from None
    folder = _opf_folder(package, name)
    pages, ncx = {}, {}
    for item in book.get_items():
        member = posixpath.normpath(posixpath.join(folder, item.file_name))
        if item.get_type() in (ebooklib.ITEM_DOCUMENT, ebooklib.ITEM_NAVIGATION):
            raw = package.read(member)
            if item.media_type == "application/x-dtbncx+xml":
                root = parse(raw, f"{name}: {member}")
                ncx[member] = (raw, root, units_of([root], NCX_RULES))
            else:
                pages[member] = HtmlPage(decode(raw, f"{name}: {member}"))
    units = [u for page in pages.values() for u in page.units]
    units += [items for _, _, found in ncx.values() for items, _ in found]
    texts = iter(translate_units(translator, units, **options))
    changed = {
        m: page.write([next(texts) for _ in page.units]).encode() for m, page in pages.items()
    }
    for member, (raw, root, found) in ncx.items():
        for (_, slots), new in zip(found, [next(texts) for _ in found], strict=True):
            if new is not None:
                write(slots, new)
        changed[member] = serialize(root, raw)
    return rewrite(package, changed)


def _opf_folder(package, name: str) -> str:
    """The folder of the package document, which the manifest's paths are relative to."""
    container = parse(package.read("META-INF/container.xml"), f"{name}: META-INF/container.xml")
    rootfile = container.find(f".//{CONTAINER}rootfile")
    if rootfile is None:
        raise DocumentError(f"{name}: META-INF/container.xml names no package document")
    return posixpath.dirname(rootfile.get("full-path", ""))

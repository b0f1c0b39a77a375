"""Files people have, translated with everything but their text kept: one module a format.

`translate_file` takes a file's bytes and gives the translated file's bytes, whole or
not at all (an error is a `DocumentError` naming the file, and the line where there is
one). Each format module reads its file with a library made for it (an optional extra:
`pip install 'nmt[documents]'`), lists its translatable units as `nmt.text.placement`
items, has them translated in one batch, and writes back only their text; why each
library, and what each format keeps, is in its module's docstring and docs/documents.md.

PDF is refused: a PDF holds glyphs at positions, not paragraphs and runs, so a
translation cannot be put back without re-laying the page out (which no maintained
library does faithfully); converted to .docx or .odt first, it keeps its paragraphs.
"""

from __future__ import annotations

import codecs
import importlib
from dataclasses import dataclass
from pathlib import Path

from nmt.errors import NmtError

# format -> its module under nmt.text.formats, and the suffixes that name it
FORMATS = {
    "text": ("plain", ("txt", "text")),
    "html": ("html", ("html", "htm", "xhtml")),
    "md": ("markdown", ("md", "markdown")),
    "docx": ("docx", ("docx",)),
    "pptx": ("pptx", ("pptx",)),
    "odt": ("odf", ("odt",)),
    "odp": ("odf", ("odp",)),
    "epub": ("epub", ("epub",)),
    "srt": ("subtitles", ("srt",)),
    "vtt": ("subtitles", ("vtt",)),
    "po": ("po", ("po", "pot")),
    "xliff": ("xliff", ("xliff", "xlf")),
}
BINARY = {"docx", "pptx", "odt", "odp", "epub"}  # zips: never written to a terminal
# the import name of each library an extra brings -> its name on PyPI
PACKAGES = {
    "docx": "python-docx",
    "pptx": "python-pptx",
    "lxml": "lxml",
    "ebooklib": "EbookLib",
    "srt": "srt",
    "webvtt": "webvtt-py",
    "polib": "polib",
    "markdown_it": "markdown-it-py",
}
REFUSED = {
    "pdf": "PDF is not translated (it holds glyphs at positions, not paragraphs to put a "
    "translation back into): convert it to .docx or .odt first "
    "(e.g. `soffice --headless --convert-to docx FILE.pdf`) and translate that",
    "doc": "the old binary .doc is not read: save it as .docx or .odt and translate that",
    "ppt": "the old binary .ppt is not read: save it as .pptx or .odp and translate that",
}


class DocumentError(NmtError):
    """A file that cannot be read as its format, or a format this toolkit lacks."""


@dataclass(frozen=True)
class FileOptions:
    """What a file's own translations are: kept unless `retranslate` (.po, XLIFF); what
    is machine-translated is marked for review with `review` (.po: fuzzy; XLIFF 1.2:
    needs-review-translation)."""

    retranslate: bool = False
    review: bool = False


def format_of(name: str, given: str | None = None) -> str:
    """The format `given`, or the one `name`'s suffix says; text where it says none."""
    if given:
        return given
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in REFUSED:
        raise DocumentError(f"{name}: {REFUSED[suffix]}")
    for fmt, (_, suffixes) in FORMATS.items():
        if suffix in suffixes:
            return fmt
    return "text"


def translate_file(
    translator, data: bytes, fmt: str, name: str, files: FileOptions = FileOptions(), **options
) -> bytes:
    """The translated file's bytes; `name` only names it in errors; `options`:
    `nmt.text.documents.translate_parts`' (search options, split, summary)."""
    module = _module(fmt, name)
    if fmt in BINARY:
        return module.translate(translator, data, name, fmt=fmt, files=files, **options)
    bom = codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b""
    text = decode(data[len(bom) :], name)
    out = module.translate(translator, text, name, fmt=fmt, files=files, **options)
    return bom + out.encode("utf-8")


def _module(fmt: str, name: str):
    if fmt not in FORMATS:
        raise DocumentError(f"{name}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    try:
        return importlib.import_module(f"nmt.text.formats.{FORMATS[fmt][0]}")
    except ImportError as err:  # the extra is not installed
        package = PACKAGES.get((err.name or "").split(".")[0], err.name)
        raise DocumentError(
            f"{name}: {fmt} files need {package}: pip install 'nmt[documents]'"
        ) from None


def decode(data: bytes, name: str) -> str:
    """UTF-8 text, or an error naming the line that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DocumentError(f"{name} line {line}: not valid UTF-8") from None


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1

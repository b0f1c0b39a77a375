"""Every document format: translated by a stand-in that changes nothing, a file comes back
with the same structure (zips: the same members, byte for byte but the text parts); by
one that upper-cases, every text node with letters is changed and nothing else; all of
a file's text goes to the model in one batch; bad files are one error naming the file."""

from __future__ import annotations

import io
import sys
import zipfile

import pytest

from nmt.text.formats import FORMATS, DocumentError, FileOptions, format_of, translate_file
from tests.documents_made import MAKERS, docx_file, epub_file, po_file, srt_file, vtt_file
from tests.documents_read import compare
from tests.stand_in import StandIn, identity, upper

FORMAT_NAMES = list(FORMATS)


@pytest.fixture(scope="module")
def made() -> dict[str, bytes]:
    return {fmt: make() for fmt, make in MAKERS.items()}


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_an_unchanged_translation_gives_the_file_back(made, fmt):
    source = made[fmt]

    out = translate_file(identity(), source, fmt, f"test.{fmt}")

    assert compare(fmt, source, out, lambda s: s) > 0


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_every_text_node_with_letters_is_translated_and_nothing_else(made, fmt):
    source, translator = made[fmt], upper()

    out = translate_file(translator, source, fmt, f"test.{fmt}")

    changed = compare(fmt, source, out, str.upper)
    print(f"{fmt}: {changed} text nodes with letters, each changed")
    assert changed >= 4
    assert len(translator.calls) == 1  # the whole file in one batch


def test_the_files_own_translations_are_kept_unless_asked(made):
    redo = FileOptions(retranslate=True, review=True)
    po = translate_file(upper(), made["po"], "po", "t.po").decode()
    again = translate_file(upper(), made["po"], "po", "t.po", redo).decode()
    xliff = translate_file(upper(), made["xliff"], "xliff", "t.xlf", redo).decode()

    assert 'msgstr "Already translated"' in po and 'msgstr "SCHON ÜBERSETZT"' in again
    assert again.count("fuzzy") == 6 and po.count("fuzzy") == 0
    assert "Already here" not in xliff and xliff.count('state="needs-review-translation"') == 5


def test_the_format_comes_from_the_suffix():
    assert [format_of(n) for n in ("a.DOCX", "b.xlf", "c.pot", "d.de", "e.htm")] == [
        "docx",
        "xliff",
        "po",
        "text",
        "html",
    ]
    with pytest.raises(DocumentError, match=r"a\.pdf: PDF is not translated .* \.docx or \.odt"):
        format_of("a.pdf")


def _zip_without(data: bytes, member: str) -> bytes:
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename != member:
                target.writestr(info, source.read(info))
    return out.getvalue()


BAD = [  # (format, the file, what the one-line error says)
    ("docx", lambda: docx_file()[:3000], r"bad\.docx: not a readable Word document \(a broken zip"),
    ("docx", lambda: MAKERS["pptx"](), r"bad\.docx: not a readable Word document"),
    ("pptx", lambda: b"PK\x03\x04 not really", r"bad\.pptx: not a readable PowerPoint"),
    (
        "odt",
        lambda: _zip_without(MAKERS["odt"](), "styles.xml"),
        r"bad\.odt: the manifest lists styles\.xml",
    ),
    ("odp", lambda: MAKERS["odt"](), r"bad\.odp: not an OpenDocument presentation"),
    (
        "epub",
        lambda: _zip_without(epub_file(), "EPUB/c1.xhtml"),
        r"bad\.epub: the manifest names .*c1\.xhtml",
    ),
    (
        "po",
        lambda: po_file() + b'msgid "x"\nmsgstr "y"\nkaputt\n',
        r"bad\.po: Syntax error in po file \(line \d+\)",
    ),
    (
        "srt",
        lambda: srt_file().replace(b"00:00:03,000 -->", b"00:00:0x,000 -->"),
        r"bad\.srt line 6: not a subtitle block",
    ),
    (
        "vtt",
        lambda: vtt_file().replace(b"00:00:01.000 -->", b"00:0x:01.000 -->"),
        r"bad\.vtt line \d+: broken cue timings",
    ),
    ("vtt", lambda: b"Kein WEBVTT\n", r"bad\.vtt line 1: a WebVTT file starts with WEBVTT"),
    (
        "xliff",
        lambda: b"<xliff><file>\n<unit></file></xliff>",
        r"bad\.xliff line 2: not well-formed XML",
    ),
    ("xliff", lambda: b"<html/>", r"bad\.xliff: not an XLIFF document"),
    ("md", lambda: b"ok\n\xff\n", r"bad\.md line 2: not valid UTF-8"),
]


@pytest.mark.parametrize(
    ("fmt", "make", "said"), BAD, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD)]
)
def test_a_bad_file_is_one_error_naming_it(fmt, make, said):
    with pytest.raises(DocumentError, match=said) as error:
        translate_file(identity(), make(), fmt, f"bad.{fmt}")

    assert "\n" not in str(error.value)


def test_a_missing_extra_is_one_error_naming_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "docx", None)  # as if python-docx were not installed
    monkeypatch.delitem(sys.modules, "nmt.text.formats.docx", raising=False)

    with pytest.raises(
        DocumentError, match=r"a\.docx: docx files need python-docx: pip install 'nmt\[documents\]'"
    ):
        translate_file(identity(), b"", "docx", "a.docx")


def test_a_translation_that_reverses_the_words_loses_none(made):
    """Words reversed, each aligned to its source word: runs keep their order (the
    tree is kept), so crossing alignments cannot all be followed, but every word of
    the translation lands in a run, in order."""
    import docx

    reverse = StandIn(lambda s: " ".join(reversed(s.split())), align=lambda j, n: n - 1 - j)

    out = translate_file(reverse, made["docx"], "docx", "t.docx")

    paragraph = docx.Document(io.BytesIO(out)).paragraphs[0]
    assert paragraph.text == "Park. im Katze die sieht Mann Ein"

"""Test documents made with each format's own library from one spec: paragraphs of runs,
each run (text, style) with style a subset of "bi" (bold, italic); every document also
has the format's furniture (tables, notes, images, comments, codes) that must be kept."""

from __future__ import annotations

import html
import io
import struct
import warnings
import zipfile
import zlib

Run = tuple[str, str]

SPEC: list[list[Run]] = [
    [("Ein Mann ", ""), ("sieht", "b"), (" die ", ""), ("Kat", "i"), ("ze im Park.", "")],
    [("Der Hund läuft. Die Katze springt!", "")],
    [("Zahlen: ", ""), ("12 345", "b")],
    [("", ""), ("Ein ", "bi"), ("leerer", ""), (" Lauf", "i")],
]


def png() -> bytes:
    """A 1x1 PNG, for the documents' images."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
        + chunk(b"IEND", b"")
    )


def _text(runs: list[Run]) -> str:
    return "".join(text for text, _ in runs)


def docx_file(spec: list[list[Run]] = SPEC) -> bytes:
    import docx
    from docx.oxml import parse_xml

    document = docx.Document()
    for runs in spec:
        paragraph = document.add_paragraph()
        for text, style in runs:
            run = paragraph.add_run(text)
            run.bold, run.italic = "b" in style or None, "i" in style or None
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Eine Zelle", "42"
    document.add_picture(io.BytesIO(png()))
    section = document.sections[0]
    section.header.paragraphs[0].text = "Die Kopfzeile"
    section.footer.paragraphs[0].text = "Die Fußzeile"
    field = document.add_paragraph()._p  # a field: its code kept, its shown text translated
    field.append(
        parse_xml(f'<w:r {NS}><w:instrText xml:space="preserve"> PAGE </w:instrText></w:r>')
    )
    boxed = document.add_paragraph("Vor dem Kasten ")._p  # a text box: its paragraphs too
    boxed.append(parse_xml(TEXT_BOX))
    out = io.BytesIO()
    document.save(out)
    return _with_footnote(out.getvalue())


NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
TEXT_BOX = (
    f'<w:r {NS} xmlns:v="urn:schemas-microsoft-com:vml"><w:pict><v:shape><v:textbox>'
    "<w:txbxContent><w:p><w:r><w:t>Ein Text im Kasten</w:t></w:r></w:p></w:txbxContent>"
    "</v:textbox></v:shape></w:pict></w:r>"
)
FOOTNOTES = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:footnotes {NS}>'
    '<w:footnote w:id="1"><w:p><w:r><w:t xml:space="preserve">Eine </w:t></w:r>'
    "<w:r><w:rPr><w:b/></w:rPr><w:t>Fußnote</w:t></w:r></w:p></w:footnote></w:footnotes>"
)


def _with_footnote(data: bytes) -> bytes:
    """python-docx writes no footnotes: one added as Word links it (part, content type,
    relationship, reference)."""
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    rel = (
        '<Relationship Id="rIdFn" Type="http://schemas.openxmlformats.org/officeDocument/'
        '2006/relationships/footnotes" Target="footnotes.xml"/></Relationships>'
    )
    kind = "application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml"
    override = f'<Override PartName="/word/footnotes.xml" ContentType="{kind}"/></Types>'
    reference = '<w:r><w:footnoteReference w:id="1"/></w:r></w:p>'
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            member = (
                source.read(info).decode("utf-8")
                if info.filename.endswith((".xml", ".rels"))
                else None
            )
            if info.filename == "[Content_Types].xml":
                member = member.replace("</Types>", override)
            elif info.filename == "word/_rels/document.xml.rels":
                member = member.replace("</Relationships>", rel)
            elif info.filename == "word/document.xml":
                member = member.replace("</w:p>", reference, 1)
            target.writestr(
                info, member.encode("utf-8") if member is not None else source.read(info)
            )
        target.writestr("word/footnotes.xml", FOOTNOTES)
    return out.getvalue()


def pptx_file(spec: list[list[Run]] = SPEC) -> bytes:
    import pptx
    from pptx.util import Inches

    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Ein Titel"
    frame = slide.placeholders[1].text_frame
    for k, runs in enumerate(spec):
        paragraph = frame.paragraphs[0] if k == 0 else frame.add_paragraph()
        for text, style in runs:
            run = paragraph.add_run()
            run.text = text
            run.font.bold, run.font.italic = "b" in style or None, "i" in style or None
    table = slide.shapes.add_table(1, 2, Inches(1), Inches(5), Inches(4), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "Eine Zelle", "42"
    slide.shapes.add_picture(io.BytesIO(png()), Inches(6), Inches(1))
    slide.notes_slide.notes_text_frame.text = "Die Notizen des Redners."
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def odf_file(spec: list[list[Run]] = SPEC, kind: str = "odt") -> bytes:
    from odf import draw, office, text
    from odf.opendocument import OpenDocumentPresentation, OpenDocumentText
    from odf.style import MasterPage, PageLayout, Style, TextProperties

    document = OpenDocumentText() if kind == "odt" else OpenDocumentPresentation()
    for name, props in (("B", {"fontweight": "bold"}), ("I", {"fontstyle": "italic"})):
        style = Style(name=name, family="text")
        style.addElement(TextProperties(**props))
        document.automaticstyles.addElement(style)
    paragraphs = []
    for runs in spec:
        paragraph = text.P()
        for content, style in runs:
            target = paragraph
            for letter in style:  # nested spans: bold outside, italic inside
                span = text.Span(stylename={"b": "B", "i": "I"}[letter])
                target.addElement(span)
                target = span
            target.addText(content)
        paragraphs.append(paragraph)
    note = text.Note(noteclass="footnote", id="n1")
    note.addElement(text.NoteCitation(text="1"))
    body = text.NoteBody()
    body.addElement(text.P(text="Eine Fußnote."))
    note.addElement(body)
    paragraphs[0].addElement(note)
    comment = office.Annotation()
    comment.addElement(text.P(text="Ein Kommentar bleibt."))
    paragraphs[-1].addElement(comment)
    paragraphs[-1].addElement(text.S(c=3))
    paragraphs[-1].addText("Nach Leerzeichen.")
    if kind == "odt":
        document.text.addElement(text.H(outlinelevel=1, text="Eine Überschrift"))
        for paragraph in paragraphs:
            document.text.addElement(paragraph)
    else:
        layout = PageLayout(name="Layout")
        document.automaticstyles.addElement(layout)
        master = MasterPage(name="Standard", pagelayoutname=layout)
        document.masterstyles.addElement(master)
        page = draw.Page(masterpagename=master)
        frame = draw.Frame(width="20cm", height="10cm", x="1cm", y="1cm")
        box = draw.TextBox()
        for paragraph in paragraphs:
            box.addElement(paragraph)
        frame.addElement(box)
        page.addElement(frame)
        document.presentation.addElement(page)
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def epub_file(spec: list[list[Run]] = SPEC) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("nmt-test")
    book.set_title("Ein Buch")
    book.set_language("de")
    chapters = []
    for k, part in enumerate((spec[: len(spec) // 2 + 1], spec[len(spec) // 2 + 1 :])):
        chapter = epub.EpubHtml(title=f"Kapitel {k + 1}", file_name=f"c{k}.xhtml", lang="de")
        chapter.content = f"<h1>Kapitel {k + 1}</h1>" + html_body(part or [[("Leer.", "")]])
        book.add_item(chapter)
        chapters.append(chapter)
    book.add_item(
        epub.EpubItem(uid="img", file_name="bild.png", media_type="image/png", content=png())
    )
    book.toc = tuple(chapters)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epub.write_epub(out, book)
    return out.getvalue()


def html_body(spec: list[list[Run]]) -> str:
    return (
        "".join(f"<p>{_html_runs(runs)}</p>" for runs in spec)
        + '<p><img src="bild.png" alt="Bild"/></p>'
    )


def _html_runs(runs: list[Run]) -> str:
    out = ""
    for text, style in runs:
        text = html.escape(text, quote=False)
        for letter in reversed(style):
            text = f"<{letter}>{text}</{letter}>"
        out += text
    return out


def html_file(spec: list[list[Run]] = SPEC) -> bytes:
    head = "<head><title>Ein Titel</title><style>p {}</style></head>"
    script = '<script>var x = "Hund";</script>'
    body = f"<body>{html_body(spec)}{script}</body>"
    return f'<!DOCTYPE html><html lang="de">{head}{body}</html>\n'.encode()


def md_file(spec: list[list[Run]] = SPEC) -> bytes:
    marks = {"b": "**", "i": "*"}
    blocks = ["---\ntitle: Ein Titel\n---", "# Eine Überschrift"]
    for runs in spec:
        line = ""
        for text, style in runs:
            inner = text.strip()
            if style and inner:  # CommonMark: emphasis hugs its text
                lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
                wrapped = marks.get(style, "***") + _md_escape(inner) + marks.get(style, "***")
                line += lead + wrapped + trail
            else:
                line += _md_escape(text)
        blocks.append(line)
    blocks += [
        "```python\nprint('nicht übersetzen')\n```",
        "| Spalte | Zahl |\n|---|---|\n| Eine Zelle | 42 |",
        'Mit `code` und [einem Link](https://example.com "Titel") und ![Bild](bild.png).',
    ]
    return ("\n\n".join(blocks) + "\n").encode()


def _md_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_[]<>#|&!" else c for c in text)


def srt_file(spec: list[list[Run]] = SPEC) -> bytes:
    import datetime

    import srt

    subs = []
    for k, runs in enumerate(spec):
        content = _html_runs(runs)
        words = content.split(" ")
        content = (
            " ".join(words[: len(words) // 2]) + "\n" + " ".join(words[len(words) // 2 :])
            if len(words) > 3
            else content
        )
        start = datetime.timedelta(seconds=2 * k + 1)
        subs.append(
            srt.Subtitle(k + 1, start, start + datetime.timedelta(seconds=1.5), content or "…")
        )
    return srt.compose(subs).encode()


def vtt_file(spec: list[list[Run]] = SPEC) -> bytes:
    import webvtt

    captions = []
    for k, runs in enumerate(spec):
        content = _html_runs(runs) or "…"
        captions.append(webvtt.Caption(f"00:00:0{k}.000", f"00:00:0{k}.900", content))
    return (
        "WEBVTT\n\nNOTE Ein Kommentar bleibt.\n\n"
        + webvtt.WebVTT(captions=captions).content.split("\n", 2)[2]
    ).encode()


def po_file(spec: list[list[Run]] = SPEC) -> bytes:
    import polib

    catalogue = polib.POFile()
    catalogue.metadata = {
        "Content-Type": "text/plain; charset=UTF-8",
        "Plural-Forms": "nplurals=2; plural=(n != 1);",
    }
    for k, runs in enumerate(spec):
        msgid = _html_runs(runs) or "%s"
        catalogue.append(
            polib.POEntry(
                msgid=msgid, msgstr="", occurrences=[("app.py", str(k))], comment="Ein Hinweis"
            )
        )
    catalogue.append(
        polib.POEntry(
            msgid="Eine Datei",
            msgid_plural="%(count)d Dateien",
            msgstr_plural={0: "", 1: ""},
            msgctxt="Dateien",
            flags=["python-format"],
        )
    )
    catalogue.append(polib.POEntry(msgid="Schon übersetzt", msgstr="Already translated"))
    catalogue.append(polib.POEntry(msgid="Veraltet", msgstr="Obsolete", obsolete=True))
    return str(catalogue).encode()


def xliff_file(spec: list[list[Run]] = SPEC) -> bytes:
    units = []
    for k, runs in enumerate(spec):
        inner = ""
        for text, style in runs:
            text = html.escape(text, quote=False)
            for n, _ in enumerate(style):
                text = f'<g id="{k}-{n}">{text}</g>'
            inner += text
        source = f'<source>{inner}<x id="x{k}"/></source>'
        units.append(f'<trans-unit id="u{k}">{source}<note>Eine Notiz bleibt.</note></trans-unit>')
    done = '<source>Schon da</source><target state="final">Already here</target>'
    units.append(f'<trans-unit id="done">{done}</trans-unit>')
    body = "\n      ".join(units)
    file = '<file source-language="de" target-language="en" datatype="plaintext" original="app">'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">\n'
        f"  {file}\n    <body>\n      {body}\n    </body>\n  </file>\n</xliff>\n"
    ).encode()


def txt_file(spec: list[list[Run]] = SPEC) -> bytes:
    return "".join(_text(runs) + "\n" for runs in spec).encode()


MAKERS = {
    "text": txt_file,
    "html": html_file,
    "md": md_file,
    "docx": docx_file,
    "pptx": pptx_file,
    "odt": lambda spec=SPEC: odf_file(spec, "odt"),
    "odp": lambda spec=SPEC: odf_file(spec, "odp"),
    "epub": epub_file,
    "srt": srt_file,
    "vtt": vtt_file,
    "po": po_file,
    "xliff": xliff_file,
}

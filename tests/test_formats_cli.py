"""`nmt translate` on documents, with the small trained model: the format from the
suffix, the file translated and readable by its library; a wrong output name, a PDF or
a broken file is one line and exit 2, and no output is left half-written."""

from __future__ import annotations

import hashlib
import io

import pytest

from nmt import cli
from tests.documents_made import MAKERS, docx_file


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        cli.main(["-q", *argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_a_docx_is_translated_into_a_docx(trained_run, tmp_path, capsys):
    import docx

    (tmp_path / "in.docx").write_bytes(docx_file([[("Der ", ""), ("hund", "b"), (" läuft.", "")]]))

    code, err = run(
        [
            "translate",
            str(trained_run),
            "-i",
            str(tmp_path / "in.docx"),
            "-o",
            str(tmp_path / "out.docx"),
        ],
        capsys,
    )

    assert code == 0, err
    paragraph = docx.Document(io.BytesIO((tmp_path / "out.docx").read_bytes())).paragraphs[0]
    assert paragraph.text and paragraph.text != "Der hund läuft."
    assert [bool(r.bold) for r in paragraph.runs][:3] == [False, True, False]


@pytest.mark.parametrize("fmt", ["po", "srt", "md"])
def test_a_text_format_goes_from_stdin_to_stdout_with_format(trained_run, fmt, monkeypatch, capsys):
    source = MAKERS[fmt]()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(source)))
    out = io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(out))

    code, err = run(["translate", str(trained_run), "--format", fmt], capsys)

    assert code == 0, err
    assert out.getvalue() and out.getvalue() != source


REFUSED = [  # (input name, its bytes, output name, what the error names)
    ("in.docx", docx_file, "out.txt", "-o {out}: a docx input comes back as docx"),
    ("in.pdf", lambda: b"%PDF-1.4", "out.docx", "in.pdf: PDF is not translated"),
    ("in.docx", lambda: docx_file()[:2000], "out.docx", "in.docx: not a readable Word document"),
    (
        "in.po",
        lambda: b'msgid "a"\nmsgstr ""\nkaputt\n',
        "out.po",
        "in.po: Syntax error in po file (line 3)",
    ),
]


@pytest.mark.parametrize(("name", "make", "output", "said"), REFUSED)
def test_a_refused_document_is_one_line_and_leaves_the_output_alone(
    trained_run, tmp_path, capsys, name, make, output, said
):
    (tmp_path / name).write_bytes(make())
    (tmp_path / output).write_bytes(b"precious")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}

    code, err = run(
        ["translate", str(trained_run), "-i", str(tmp_path / name), "-o", str(tmp_path / output)],
        capsys,
    )

    assert code == 2 and len(err.splitlines()) == 1, err
    assert said.format(out=tmp_path / output) in err
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing left behind

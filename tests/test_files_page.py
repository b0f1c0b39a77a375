"""The file form at /files in a real browser (Debian's chromium, headless, playwright; as
tests/test_page.py runs it, skipped where either is missing except in CI): a .docx
chosen and sent gets a download that python-docx opens, its runs kept."""

from __future__ import annotations

import io

import pytest

from tests.documents_made import docx_file
from tests.test_page import browser  # noqa: F401 (its fixture, and its skip without chromium)
from tests.test_serve import serving


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run) as url:
        yield url


def test_a_file_sent_from_the_browser_form_comes_back_as_a_file_that_opens(
    browser,  # noqa: F811 (the fixture imported above)
    server,
    tmp_path,
):
    import docx

    source = tmp_path / "bericht.docx"
    source.write_bytes(docx_file([[("Der ", ""), ("hund", "b"), (" läuft im park.", "")]]))
    page = browser.new_page(accept_downloads=True)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server + "/files")
    page.wait_for_function("document.querySelectorAll('#target option').length > 0")

    page.set_input_files("#file", str(source))
    page.click("#go")
    page.wait_for_selector("#download:not([hidden])", timeout=60_000)
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)

    assert saved.name == "bericht.en.docx" and not errors
    paragraph = docx.Document(io.BytesIO(saved.read_bytes())).paragraphs[0]
    assert paragraph.text and paragraph.text != "Der hund läuft im park."
    assert [bool(r.bold) for r in paragraph.runs][:3] == [False, True, False]

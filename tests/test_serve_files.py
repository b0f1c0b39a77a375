"""LibreTranslate's `POST /translate_file` and `GET /download_file/<name>` against a real
server (as tests/test_serve.py starts it): every format comes back as a file its library
opens; bad, unknown and oversized files get their 4xx with a message; a result expires."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request

import pytest

from tests.documents_made import MAKERS, docx_file
from tests.test_formats_fuzz import opens
from tests.test_serve import serving

NAMES = {fmt: f"doc.{'txt' if fmt == 'text' else fmt}" for fmt in MAKERS}


def multipart(fields: dict, file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    if file:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
        )
        parts.append(
            head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + file[1] + b"\r\n"
        )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, file: tuple[str, bytes] | None, **fields) -> tuple[int, dict]:
    body, kind = multipart({"source": "de", "target": "en", **fields}, file)
    request = urllib.request.Request(
        url + "/translate_file", data=body, headers={"Content-Type": kind}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read(), response.headers.get("content-disposition", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), ""


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run) as url:
        yield url


@pytest.mark.parametrize("fmt", list(MAKERS))
def test_every_format_comes_back_as_a_file_that_opens(server, fmt):
    source = MAKERS[fmt]()

    status, answer = post(server, (NAMES[fmt], source))
    assert status == 200, answer
    got, data, disposition = get(answer["translatedFileUrl"])

    assert got == 200 and data != source
    assert f"doc.en.{NAMES[fmt].split('.')[1]}" in disposition
    opens(fmt, data)
    if fmt not in ("docx", "pptx", "odt", "odp", "epub"):
        data.decode("utf-8")


BAD = [  # (the file, other fields, status, what the message names)
    (("a.xyz", b"Hallo"), {}, 400, "unknown format 'xyz'; supported: .txt"),
    (("a.pdf", b"%PDF-1.4"), {}, 400, "convert it to .docx or .odt"),
    (("a.docx", b"PK\x03\x04 kaputt"), {}, 400, "a.docx: not a readable Word document"),
    (("a.po", b'msgid "a"\nmsgstr ""\nkaputt\n'), {}, 400, "line 3"),
    (None, {}, 400, "missing field 'file'"),
    (("a.txt", b"Hallo"), {"target": "xx"}, 400, "no model for de -> xx"),
    (("a.txt", b"x" * (11 << 20)), {}, 413, "over the limit of"),
]


@pytest.mark.parametrize(("file", "fields", "status", "named"), BAD)
def test_a_bad_upload_gets_its_status_and_a_message_naming_it(server, file, fields, status, named):
    got, answer = post(server, file, **fields)

    assert got == status and named in answer["error"], answer


def test_a_name_that_was_never_given_is_not_found(server):
    status, answer = post(server, ("a.txt", "Der hund läuft.\n".encode()))
    token = answer["translatedFileUrl"].rsplit("/", 1)[1]

    assert len(token) >= 32  # 192 random bits
    assert get(f"{server}/download_file/{token[:-1]}x")[0] == 404
    assert get(f"{server}/download_file/..%2Fetc%2Fpasswd")[0] == 404


def test_a_result_is_gone_after_its_time(trained_run):
    with serving(trained_run, "--file-keep-seconds", "0") as url:
        status, answer = post(url, ("a.docx", docx_file()))
        gone = get(answer["translatedFileUrl"])

    assert status == 200 and gone[0] == 404

"""LibreTranslate's file translation: `POST /translate_file` (multipart: `file`, `source`,
`target`, `api_key`) answers `{"translatedFileUrl": ...}`, and `GET /download_file/<name>`
gives the translated file; the page at /files is a form that does both from a browser.

Every format `nmt translate` reads (`nmt.text.formats`), named by the file's suffix; an
unknown suffix is 400 naming the supported ones, a PDF 400 saying what to convert it to,
a file that cannot be read as its format 400 with the reader's one line. The upload is
read by the guard and the door like any body, under its own limit
(`Limits.max_file_bytes`: 413). The translation runs in the model's thread
(`Batcher.call`), alone. A result is kept `Limits.file_keep_seconds` in a private
temporary folder under a name with 192 random bits, so that no client can guess
another's; expired ones are deleted as requests come, and all of them when the server
stops.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from starlette.responses import FileResponse, JSONResponse, Response

from nmt.serve.context import Call, Served
from nmt.serve.door import RequestError
from nmt.text.formats import FORMATS, REFUSED, translate_file
from nmt.translate import Translator

SUFFIXES = {s: fmt for fmt, (_, suffixes) in FORMATS.items() for s in suffixes}


class Files:
    def __init__(self, served: Served, by_pair: dict[str, Translator]):
        self.served, self.by_pair = served, by_pair
        self.folder = Path(tempfile.mkdtemp(prefix="nmt-files-"))
        self.stored: dict[str, tuple[float, str]] = {}  # name -> (expiry, download name)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    async def translate(self, call: Call) -> Response:
        self._expire()
        params = call.params
        if "file" not in params.files:
            raise RequestError("missing field 'file' (a multipart file upload)")
        for key in ("source", "target"):
            if not isinstance(params.get(key), str):
                raise RequestError(f"missing field '{key}'")
        chosen = self.served.pair(params.get("source"), params.get("target"))
        given, data = params.files["file"]
        name = Path(given or "file").name
        suffix = Path(name).suffix.lower().lstrip(".")
        if suffix in REFUSED:
            raise RequestError(f"{name}: {REFUSED[suffix]}")
        if suffix not in SUFFIXES:
            known = ", ".join(f".{s}" for s in SUFFIXES)
            raise RequestError(
                f"{name}: unknown format {suffix or '(no suffix)'!r}; supported: {known}"
            )
        translator = self.by_pair[chosen]
        glossary = self.served.batcher.glossary  # `nmt serve --glossary`: files too
        out = await self.served.batcher.call(
            lambda: translate_file(translator, data, SUFFIXES[suffix], name, glossary=glossary)
        )
        token = secrets.token_urlsafe(24)
        (self.folder / token).write_bytes(out)
        stem = re.sub(r"[^\w.-]", "_", Path(name).stem)[:80] or "file"
        download = f"{stem}.{params.get('target')}.{suffix}"
        expiry = time.monotonic() + self.served.limits.file_keep_seconds
        self.stored[token] = (expiry, download)
        url = f"{str(call.request.base_url).rstrip('/')}/download_file/{token}"
        return JSONResponse({"translatedFileUrl": url})

    async def download(self, call: Call) -> Response:
        self._expire()
        token = call.request.path_params["name"]
        if token not in self.stored:
            raise RequestError("no such file: it expired, or it never was", 404)
        _, download = self.stored[token]
        return FileResponse(self.folder / token, filename=download)

    def _expire(self) -> None:
        now = time.monotonic()
        for token, (expiry, _) in list(self.stored.items()):
            if expiry < now:
                del self.stored[token]
                (self.folder / token).unlink(missing_ok=True)

"""LibreTranslate's file translation: `POST /translate_file` (multipart: `file`, `source`,
`target`) answers `{"translatedFileUrl": ...}`, and `GET /download_file/<name>` gives the
translated file; the page at /files is a form that does both from a browser.

Every format `nmt translate` reads (`nmt.text.formats`), named by the file's suffix; an
unknown suffix is 400 naming the supported ones, a PDF 400 saying what to convert it to,
a file that cannot be read as its format 400 with the reader's one line. A body over
`max_bytes` is 413 before it is parsed. The translation runs in the model's thread
(`Batcher.call`), alone. A result is kept `keep_seconds` in a private temporary folder
under a name with 192 random bits, so that no client can guess another's; expired ones
are deleted as requests come, and all of them when the server stops.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from nmt.errors import NmtError
from nmt.serve.batcher import RequestError
from nmt.text.formats import FORMATS, REFUSED, translate_file

SUFFIXES = {s: fmt for fmt, (_, suffixes) in FORMATS.items() for s in suffixes}


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int = 10 << 20  # an uploaded file, with the form around it
    keep_seconds: float = 600.0  # how long a translated file can be downloaded


class Files:
    def __init__(self, by_pair: dict, pair, batcher, metrics, limits: FileLimits = FileLimits()):
        """`pair(source, target)`: the served pair's name, or a RequestError."""
        self.by_pair, self.pair, self.batcher, self.metrics = by_pair, pair, batcher, metrics
        self.limits = limits
        self.folder = Path(tempfile.mkdtemp(prefix="nmt-files-"))
        self.stored: dict[str, tuple[float, str]] = {}  # name -> (expiry, download name)

    async def translate(self, request: Request) -> Response:
        return await self._answer(request, self._translate)

    async def download(self, request: Request) -> Response:
        return await self._answer(request, self._download)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    async def _answer(self, request: Request, handler) -> Response:
        start = time.perf_counter()
        self._expire()
        try:
            response = await handler(request)
        except RequestError as err:
            response = JSONResponse({"error": str(err)}, err.status)
        except NmtError as err:  # a file its format's reader refused, named in one line
            response = JSONResponse({"error": str(err)}, 400)
        path = re.sub(r"/download_file/.*", "/download_file", request.url.path)
        self.metrics.request(path, response.status_code, time.perf_counter() - start)
        return response

    async def _translate(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise RequestError("send the file as multipart/form-data (fields file, source, target)")
        body = await self._body(request)
        try:
            form = await MultiPartParser(
                request.headers, _once(body), max_part_size=self.limits.max_bytes
            ).parse()
        except MultiPartException as err:
            raise RequestError(f"not a multipart form: {err.message}") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise RequestError("missing field 'file' (a multipart file upload)")
        for key in ("source", "target"):
            if not isinstance(form.get(key), str) or not form.get(key):
                raise RequestError(f"missing field '{key}'")
        chosen = self.pair(form["source"], form["target"])
        name = Path(upload.filename or "file").name
        suffix = Path(name).suffix.lower().lstrip(".")
        if suffix in REFUSED:
            raise RequestError(f"{name}: {REFUSED[suffix]}")
        if suffix not in SUFFIXES:
            known = ", ".join(f".{s}" for s in SUFFIXES)
            raise RequestError(
                f"{name}: unknown format {suffix or '(no suffix)'!r}; supported: {known}"
            )
        data = await upload.read()
        translator = self.by_pair[chosen]
        out = await self.batcher.call(
            lambda: translate_file(translator, data, SUFFIXES[suffix], name)
        )
        token = secrets.token_urlsafe(24)
        (self.folder / token).write_bytes(out)
        stem = re.sub(r"[^\w.-]", "_", Path(name).stem)[:80] or "file"
        download = f"{stem}.{form['target']}.{suffix}"
        self.stored[token] = (time.monotonic() + self.limits.keep_seconds, download)
        url = f"{str(request.base_url).rstrip('/')}/download_file/{token}"
        return JSONResponse({"translatedFileUrl": url})

    async def _download(self, request: Request) -> Response:
        token = request.path_params["name"]
        if token not in self.stored:
            raise RequestError("no such file: it expired, or it never was", 404)
        _, download = self.stored[token]
        return FileResponse(self.folder / token, filename=download)

    async def _body(self, request: Request) -> bytes:
        """The whole body, or a 413 once it is over the limit; the rest of it (up to 4
        times the limit) read first, so that the client reads the answer rather than a
        reset connection."""
        most = self.limits.max_bytes
        too_big = RequestError(f"the upload is over the limit of {most} bytes", 413)
        if int(request.headers.get("content-length") or 0) > 4 * most:
            raise too_big
        body, seen = bytearray(), 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= most:
                body += chunk
            elif seen > 4 * most:
                break
        if seen > most:
            raise too_big
        return bytes(body)

    def _expire(self) -> None:
        now = time.monotonic()
        for token, (expiry, _) in list(self.stored.items()):
            if expiry < now:
                del self.stored[token]
                (self.folder / token).unlink(missing_ok=True)


async def _once(body: bytes):
    yield body

"""`nmt serve`: trained models behind HTTP, in the APIs existing clients already speak.

An ASGI app (Starlette) for uvicorn, one language pair per run:

- LibreTranslate's `POST /translate` (`q` a string or a list, `source` (or "auto"),
  `target`, `format` text or html, `alternatives`; JSON or form-encoded) and
  `GET /languages`, as LibreTranslate serves them (its Python client, libretranslatepy
  2.1.4, translates and lists languages unchanged; `/detect` is not served);
- OpenNMT-py's `POST /translator/translate` (`[{"src": ..., "id": N}]`, N the N-th run);
- `POST /v1/translate`: n-best lists with scores, alignments and, asked for, attention;
  `constraints`, `avoid`, `prefix` (`nmt.options.Constraints`) and `glossary` pairs for
  every text (over the server's `--glossary`, which LibreTranslate's API gets too);
- `POST /v1/inspect`: one sentence's attention, gates and memory cells (`nmt.reporting.inside`),
  which the page at `/` (nmt/serve/static) draws;
- `GET /health` (the models are loaded before the server listens), `GET /metrics` in
  Prometheus' text format and `GET /openapi.json` (`nmt.serve.openapi`).

Requests that arrive together are translated together (`nmt.serve.batcher`), so 32 clients
with a sentence each cost about one batch. Past `max_pending` requests waiting the
answer is 503 with Retry-After; bodies and texts over their limits are 413; bad JSON,
a missing field or an unknown pair is 400 with a message naming it. uvicorn stops on
SIGTERM after answering what it accepted.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nmt.errors import NmtError
from nmt.options import Constraints, SearchOptions, convert
from nmt.reporting.inside import as_json, inspect_sentence
from nmt.serve import openapi
from nmt.serve.batcher import Batcher, Limits, Metrics, Options, RequestError
from nmt.serve.openapi import ALTERNATIVES, SERVED
from nmt.text.documents import Line
from nmt.text.glossary import Glossary
from nmt.translate import Translator

LANGUAGE_NAMES = {"de": "German", "en": "English", "fr": "French", "cs": "Czech"}
STATIC = Path(__file__).parent / "static"  # the page: package data, no build step


def build_app(
    translators: list[Translator], limits: Limits | None = None, glossary: Glossary | None = None
) -> Starlette:
    """The app for uvicorn; `translators`: one per language pair; `glossary`: applied to
    every text of every request (checked against each model: `Glossary.check`)."""
    limits = limits or Limits()
    by_pair = {_pair_of(t): t for t in translators}
    if len(by_pair) < len(translators):
        raise RequestError("two runs serve the same language pair: serve one of them")
    for translator in translators if glossary else []:
        glossary.check(translator)
    metrics = Metrics()
    batcher = Batcher(by_pair, limits, metrics, glossary)
    api = _Api(by_pair, limits, batcher)
    schema = openapi.document(list(by_pair), limits)

    def endpoint(handler):
        async def handle(request: Request) -> Response:
            start = time.perf_counter()
            try:
                length = int(request.headers.get("content-length") or 0)
                if length > limits.max_body_bytes:
                    await _discard(request, 16 * limits.max_body_bytes)
                    raise RequestError(
                        f"the body is {length} bytes, over the limit of {limits.max_body_bytes}",
                        413,
                    )
                response = await handler(request)
            except RequestError as err:
                headers = {"Retry-After": "1"} if err.status == 503 else None
                response = JSONResponse({"error": str(err)}, err.status, headers=headers)
            except NmtError as err:  # an option out of its range, named by the library
                response = JSONResponse({"error": str(err)}, 400)
            metrics.request(request.url.path, response.status_code, time.perf_counter() - start)
            return response

        return handle

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def schema_document(request: Request) -> Response:
        return JSONResponse(schema)

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(batcher.pending), media_type="text/plain")

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/translate", endpoint(api.libre_translate), methods=["POST"]),
        Route("/languages", endpoint(api.languages), methods=["GET"]),
        Route("/translator/translate", endpoint(api.onmt_translate), methods=["POST"]),
        Route("/v1/translate", endpoint(api.native_translate), methods=["POST"]),
        Route("/v1/inspect", endpoint(api.inspect), methods=["POST"]),
        Route("/health", endpoint(api.health), methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/openapi.json", schema_document, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    return Starlette(routes=routes, lifespan=lifespan)


class _Api:
    """The endpoints that read a request: each validates, hands the models' work to the
    batcher and answers; a RequestError becomes its status and message."""

    def __init__(self, by_pair: dict[str, Translator], limits: Limits, batcher: Batcher):
        self.by_pair, self.limits, self.batcher = by_pair, limits, batcher

    async def body(self, request: Request, forms: bool = False):
        raw = await request.body()
        if len(raw) > self.limits.max_body_bytes:
            raise RequestError(
                f"the body is over the limit of {self.limits.max_body_bytes} bytes", 413
            )
        kind = request.headers.get("content-type", "")
        if forms and kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            return dict(await request.form())
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"the body is not valid JSON: {err}") from None

    def pair(self, source, target) -> str:
        if source == "auto":  # one model per target here: its source is the language
            found = [p for p in self.by_pair if p.endswith(f"-{target}")]
            source = found[0].split("-")[0] if found else source
        if f"{source}-{target}" not in self.by_pair:
            served = ", ".join(self.by_pair)
            raise RequestError(f"no model for {source} -> {target}; served: {served}")
        return f"{source}-{target}"

    def texts(self, data, key: str) -> tuple[list[str], bool]:
        """data[key], a string or a list of them -> the list, and whether it was one."""
        if not isinstance(data, dict):
            raise RequestError("the body must be a JSON object")
        if key not in data:
            raise RequestError(f"missing field '{key}'")
        value = data[key]
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError(f"'{key}' must be a string or a list of strings")
        chars = sum(len(t) for t in texts)
        if chars > self.limits.max_text_chars:
            raise RequestError(
                f"{chars} characters of text, over the limit of {self.limits.max_text_chars}", 413
            )
        return texts, isinstance(value, str)

    def search(self, data: dict) -> SearchOptions:
        """The native APIs' search options (`SERVED`), checked as everywhere else."""
        return SearchOptions.parse({name: data.get(name) for name in SERVED})

    async def libre_translate(self, request: Request) -> Response:
        data = await self.body(request, forms=True)  # as LibreTranslate: JSON or a form
        texts, single = self.texts(data, "q")
        for key in ("source", "target"):
            if not data.get(key):
                raise RequestError(f"missing field '{key}'")
        chosen = self.pair(data["source"], data["target"])
        fmt = data.get("format") or "text"
        if fmt not in ("text", "html"):
            raise RequestError(f"'format' must be text or html, got {fmt!r}")
        alternatives = convert(ALTERNATIVES, data.get("alternatives") or 0)  # an n-best list
        nbest = 1 if fmt == "html" else 1 + alternatives
        options = Options(fmt, SearchOptions(nbest=nbest))
        results = await self.batcher.translate(chosen, texts, options)
        best = [r if fmt == "html" else r[0].text for r in results]
        answer = {"translatedText": best[0] if single else best}
        if alternatives:
            others = [[] if fmt == "html" else [h.text for h in r[1:]] for r in results]
            answer["alternatives"] = others[0] if single else others
        if data["source"] == "auto":
            detected = {"confidence": 100.0, "language": chosen.split("-")[0]}
            answer["detectedLanguage"] = detected if single else [detected] * len(texts)
        return JSONResponse(answer)

    async def languages(self, request: Request) -> Response:
        sources: dict[str, list[str]] = {}
        for p in self.by_pair:
            sources.setdefault(p.split("-")[0], []).append(p.split("-")[1])
        return JSONResponse(
            [
                {"code": s, "name": LANGUAGE_NAMES.get(s, s), "targets": t}
                for s, t in sources.items()
            ]
        )

    async def onmt_translate(self, request: Request) -> Response:
        data = await self.body(request)
        if not isinstance(data, list) or not all(
            isinstance(x, dict) and isinstance(x.get("src"), str) for x in data
        ):
            raise RequestError('expected a list of {"src": text, "id": model}')
        pairs = list(self.by_pair)
        ids = [x.get("id", 0) for x in data]
        bad = [i for i in ids if type(i) is not int or not 0 <= i < len(pairs)]  # bool: no id
        if bad:
            raise RequestError(f"model ids {bad[:5]}: served are 0-{len(pairs) - 1}")
        self.texts({"src": [x["src"] for x in data]}, "src")  # the limit on text
        out = []
        for model in sorted(set(ids)):
            items = [x for x, i in zip(data, ids, strict=True) if i == model]
            found = await self.batcher.translate(pairs[model], [x["src"] for x in items], Options())
            out += [
                {"src": x["src"], "tgt": r[0].text, "n_best": 1, "pred_score": r[0].score}
                for x, r in zip(items, found, strict=True)
            ]
        return JSONResponse([out])

    async def native_translate(self, request: Request) -> Response:
        data = await self.body(request)
        texts, _ = self.texts(data, "text")
        chosen = self.pair(data.get("source"), data.get("target"))
        search = self.search(data)
        attention = data.get("attention", False)
        if not isinstance(attention, bool):
            raise RequestError(f"'attention' must be true or false, got {attention!r}")
        options = Options("text", search, attention)
        lines = self.constrained(self.by_pair[chosen], texts, data)
        results = await self.batcher.translate(chosen, lines, options)
        translations = [
            {"nbest": [_hypothesis(*h) if attention else _hypothesis(h, None) for h in r]}
            for r in results
        ]
        return JSONResponse({"pair": chosen, "translations": translations})

    def constrained(self, translator: Translator, texts: list[str], data: dict) -> list:
        """The texts as `Line`s with the request's constraints and glossary (over the
        server's), each checked here: a batch never fails for one member."""
        terms, pairs = Constraints.parse(data), data.get("glossary")
        if not terms and pairs is None:
            return texts
        glossary = self.batcher.glossary
        if pairs is not None:
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                for p in pairs
            ):
                raise RequestError("'glossary' must be a list of [source term, target term]")
            rows = [(f"glossary pair {i}", *pair) for i, pair in enumerate(pairs)]
            ignore_case = bool(glossary and glossary.ignore_case)
            own = Glossary.of(rows, ignore_case=ignore_case)
            own.check(translator)
            glossary = glossary.merged(own) if glossary else own
        lines = [Line(text, terms, glossary) for text in texts]
        for line in lines:  # every part's constraints are a subset of the whole line's
            found = glossary.constraints(line.text) if glossary else ()
            translator.targets(terms.merged(Constraints(include=found)))
        return lines

    async def inspect(self, request: Request) -> Response:
        data = await self.body(request)
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise RequestError("'text' must be a string: one sentence")
        text = data["text"]
        if len(text) > self.limits.max_inspect_chars:
            most = self.limits.max_inspect_chars
            raise RequestError(f"'text' has {len(text)} characters, over the limit of {most}", 413)
        if not text.strip():
            raise RequestError("'text' is empty: nothing to inspect")
        chosen = self.pair(data.get("source"), data.get("target"))
        beam = SearchOptions.parse({"beam": data.get("beam")}).beam
        translator = self.by_pair[chosen]
        found = await self.batcher.call(
            lambda: as_json(inspect_sentence(translator, text, beam=beam))
        )
        return JSONResponse({"pair": chosen, **found})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pairs": list(self.by_pair)})


def _hypothesis(h, attention) -> dict:
    """A native answer's hypothesis; `attention`: a `documents.Attention` or None."""
    found = {"text": h.text, "score": h.score, "logprob": h.logprob, "missed": h.missed}
    found["alignment"] = h.alignment_pairs()
    if attention is not None:
        weights = attention.weights.double().round(decimals=4).tolist()
        found["attention"] = {
            "source": attention.source,
            "target": attention.target,
            "weights": weights,
        }
    return found


async def _discard(request: Request, most: int) -> None:
    """Reads a refused body (up to `most` bytes, chunk by chunk, keeping none) so that the
    client, still sending it, gets the 413 rather than a broken pipe."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > most:
            return


def _pair_of(translator: Translator) -> str:
    return f"{translator.cfg.data.src_lang}-{translator.cfg.data.tgt_lang}"

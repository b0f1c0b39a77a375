"""`nmt serve`: trained models behind HTTP, in the APIs existing clients already speak.

An ASGI app (Starlette) for uvicorn, one language pair per run:

- LibreTranslate's API (`nmt.serve.libre`): `/translate`, `/detect`, `/languages`,
  `/frontend/settings`, `/spec`; parameters from the query string, a form or JSON;
  optional API keys with request limits (`nmt.serve.keys`);
- OpenNMT-py's `POST /translator/translate` (`[{"src": ..., "id": N}]`, N the N-th run);
- `POST /v1/translate`: n-best lists with scores, alignments and, asked for, attention;
  `constraints`, `avoid`, `prefix` (`nmt.options.Constraints`) and `glossary` pairs for
  every text (over the server's `--glossary`, which LibreTranslate's API gets too);
- `POST /v1/inspect`: one sentence's attention, gates and memory cells (`nmt.reporting.inside`),
  which the page at `/` (nmt/serve/static) draws;
- LibreTranslate's `POST /translate_file` and `GET /download_file/<name>`: documents of
  every format `nmt translate` reads (`nmt.serve.files`), and a form for them at /files;
- `GET /health` (the models are loaded before the server listens), `GET /metrics` in
  Prometheus' text format and `GET /openapi.json` (`nmt.serve.openapi`).

Around every request: CORS (origins configurable, `*` by default, as LibreTranslate),
then the guard (`nmt.serve.guard`: body size and time, disconnects, the error boundary,
metrics); each endpoint reads its parameters at the door (`nmt.serve.door`) and hands
the models' work to the batcher (`nmt.serve.batcher`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nmt.options import Constraints, SearchOptions
from nmt.reporting.inside import as_json, inspect_sentence
from nmt.serve import openapi
from nmt.serve.batcher import Batcher, Options
from nmt.serve.context import Call, Served, endpoint
from nmt.serve.detect import Detector
from nmt.serve.door import Params, RequestError
from nmt.serve.files import Files
from nmt.serve.guard import Draining, Guard
from nmt.serve.keys import KeyStore, RateLimiter
from nmt.serve.libre import LibreApi
from nmt.serve.limits import Limits
from nmt.serve.metrics import Metrics
from nmt.serve.openapi import SERVED
from nmt.text.documents import Line
from nmt.text.glossary import Glossary
from nmt.translate import Translator

STATIC = Path(__file__).parent / "static"  # the page: package data, no build step


def build_app(
    translators: list[Translator],
    limits: Limits | None = None,
    *,
    origins: tuple[str, ...] = ("*",),
    keys: KeyStore | None = None,
    glossary: Glossary | None = None,
) -> Starlette:
    """The app for uvicorn; `translators`: one per language pair; `origins`: the web
    origins whose pages may call it (CORS); `keys`: API keys, required when given;
    `glossary`: applied to every text of every request (checked against each model:
    `Glossary.check`)."""
    limits = limits or Limits()
    by_pair = {_pair_of(t): t for t in translators}
    if len(by_pair) < len(translators):
        raise RequestError("two runs serve the same language pair: serve one of them")
    for translator in translators if glossary else []:
        glossary.check(translator)
    schema = openapi.document(list(by_pair), limits)
    metrics = Metrics({p for p in schema["paths"]} | {"/spec"})
    batcher = Batcher(by_pair, limits, metrics, glossary)
    languages = list(dict.fromkeys(code for pair in by_pair for code in pair.split("-")))
    served = Served(list(by_pair), limits, batcher, Detector(languages), keys, RateLimiter())
    libre, native = LibreApi(served), _NativeApi(served, by_pair)
    files = Files(served, by_pair)
    draining = Draining(limits.shutdown_grace)

    def route(path: str, handler, method: str = "POST", guarded=False, files=False) -> Route:
        handle = endpoint(served, handler, guarded=guarded, files=files)
        return Route(path, handle, methods=[method])

    async def page(request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def files_page(request) -> Response:
        return FileResponse(STATIC / "files.html", media_type="text/html")

    async def schema_document(call: Call) -> Response:
        return JSONResponse(schema)

    async def prometheus(call: Call) -> Response:
        return PlainTextResponse(metrics.render(batcher.pending), media_type="text/plain")

    async def health(call: Call) -> Response:
        return JSONResponse({"status": "ok", "pairs": list(by_pair)})

    routes = [
        Route("/", page, methods=["GET"]),
        route("/translate", libre.translate, guarded=True),
        route("/detect", libre.detect, guarded=True),
        route("/languages", libre.languages, "GET"),
        route("/frontend/settings", libre.frontend_settings, "GET"),
        route("/suggest", libre.suggest),
        route("/translate_file", files.translate, guarded=True, files=True),
        route("/download_file/{name}", files.download, "GET"),
        Route("/files", files_page, methods=["GET"]),
        route("/translator/translate", native.onmt_translate, guarded=True),
        route("/v1/translate", native.translate, guarded=True),
        route("/v1/inspect", native.inspect, guarded=True),
        route("/health", health, "GET"),
        route("/metrics", prometheus, "GET"),
        route("/openapi.json", schema_document, "GET"),
        route("/spec", schema_document, "GET"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        draining.attach()
        yield
        batcher.close()
        files.close()

    cors = {"allow_origins": list(origins), "allow_methods": ["GET", "POST"], "max_age": 1728000}
    middleware = [
        Middleware(CORSMiddleware, **cors, allow_headers=["*"]),
        Middleware(Guard, limits=limits, metrics=metrics, draining=draining),
    ]

    async def http_error(request, err: HTTPException) -> Response:  # 404, 405: JSON too
        return JSONResponse({"error": err.detail}, err.status_code, headers=err.headers)

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.draining = draining  # the server tells it when SIGTERM comes (nmt.serve.server)
    return app


class _NativeApi:
    """OpenNMT-py's API, the native one and /v1/inspect."""

    def __init__(self, served: Served, by_pair: dict[str, Translator]):
        self.served, self.by_pair = served, by_pair

    async def onmt_translate(self, call: Call) -> Response:
        data = call.params.body
        if not isinstance(data, list) or not all(
            isinstance(x, dict) and isinstance(x.get("src"), str) for x in data
        ):
            raise RequestError('expected a list of {"src": text, "id": model}')
        pairs = self.served.pairs
        ids = [x.get("id", 0) for x in data]
        bad = [i for i in ids if type(i) is not int or not 0 <= i < len(pairs)]  # bool: no id
        if bad:
            raise RequestError(f"model ids {bad[:5]}: served are 0-{len(pairs) - 1}")
        self.served.check_chars([x["src"] for x in data], call.chars, "src")
        out = []
        for model in sorted(set(ids)):
            items = [x for x, i in zip(data, ids, strict=True) if i == model]
            found = await self.served.batcher.translate(
                pairs[model], [x["src"] for x in items], Options()
            )
            out += [
                {"src": x["src"], "tgt": r[0].text, "n_best": 1, "pred_score": r[0].score}
                for x, r in zip(items, found, strict=True)
            ]
        return JSONResponse([out])

    async def translate(self, call: Call) -> Response:
        params = call.params
        texts, _ = params.texts("text")
        self.served.check_chars(texts, call.chars, "text")
        chosen = self.served.pair(params.get("source"), params.get("target"))
        search = SearchOptions.parse({name: params.get(name) for name in SERVED})
        attention = params.flag("attention")
        lines = self.constrained(self.by_pair[chosen], texts, params)
        results = await self.served.batcher.translate(
            chosen, lines, Options("text", search, attention)
        )
        translations = [
            {"nbest": [_hypothesis(*h) if attention else _hypothesis(h, None) for h in r]}
            for r in results
        ]
        return JSONResponse({"pair": chosen, "translations": translations})

    def constrained(self, translator: Translator, texts: list[str], params: Params) -> list:
        """The texts as `Line`s with the request's constraints and glossary (over the
        server's), each checked here: a batch never fails for one member."""
        terms, pairs = Constraints.parse(params.fields), params.get("glossary")
        if not terms and pairs is None:
            return texts
        glossary = self.served.batcher.glossary
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

    async def inspect(self, call: Call) -> Response:
        params = call.params
        text = params.get("text")
        if not isinstance(text, str):
            raise RequestError("'text' must be a string: one sentence")
        self.served.check_chars([text], self.served.limits.max_inspect_chars, "text")
        if not text.strip():
            raise RequestError("'text' is empty: nothing to inspect")
        chosen = self.served.pair(params.get("source"), params.get("target"))
        beam = SearchOptions.parse({"beam": params.get("beam")}).beam
        translator = self.by_pair[chosen]
        found = await self.served.batcher.call(
            lambda: as_json(inspect_sentence(translator, text, beam=beam))
        )
        return JSONResponse({"pair": chosen, **found})


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


def _pair_of(translator: Translator) -> str:
    return f"{translator.cfg.data.src_lang}-{translator.cfg.data.tgt_lang}"

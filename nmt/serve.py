"""`nmt serve`: trained models behind HTTP, in the APIs existing clients already speak.

An ASGI app (Starlette) for uvicorn, one language pair per run:

- LibreTranslate's `POST /translate` (`q` a string or a list, `source` (or "auto"),
  `target`, `format` text or html, `alternatives`; JSON or form-encoded) and
  `GET /languages`, as LibreTranslate serves them (its Python client, libretranslatepy
  2.1.4, translates and lists languages unchanged; `/detect` is not served);
- OpenNMT-py's `POST /translator/translate` (`[{"src": ..., "id": N}]`, N the N-th run);
- `POST /v1/translate`: n-best lists with scores and alignments;
- `GET /health` (the models are loaded before the server listens) and `GET /metrics`
  in Prometheus' text format.

Requests that arrive together are translated together (`nmt.batcher`), so 32 clients
with a sentence each cost about one batch. Past `max_pending` requests waiting the
answer is 503 with Retry-After; bodies and texts over their limits are 413; bad JSON,
a missing field or an unknown pair is 400 with a message naming it. uvicorn stops on
SIGTERM after answering what it accepted.
"""

from __future__ import annotations

import contextlib
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from nmt.batcher import Batcher, Limits, Metrics, RequestError
from nmt.config import NmtError
from nmt.decoding import check_options
from nmt.translate import Translator

LANGUAGE_NAMES = {"de": "German", "en": "English", "fr": "French", "cs": "Czech"}


def build_app(translators: list[Translator], limits: Limits | None = None) -> Starlette:
    """The app for uvicorn; `translators`: one per language pair."""
    limits = limits or Limits()
    by_pair = {_pair_of(t): t for t in translators}
    if len(by_pair) < len(translators):
        raise RequestError("two runs serve the same language pair: serve one of them")
    metrics = Metrics()
    batcher = Batcher(by_pair, limits, metrics)

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

    async def body(request: Request, forms: bool = False):
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            raise RequestError(f"the body is over the limit of {limits.max_body_bytes} bytes", 413)
        kind = request.headers.get("content-type", "")
        if forms and kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            return dict(await request.form())
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"the body is not valid JSON: {err}") from None

    def pair(source, target) -> str:
        if source == "auto":  # one model per target here: its source is the language
            found = [p for p in by_pair if p.endswith(f"-{target}")]
            source = found[0].split("-")[0] if found else source
        if f"{source}-{target}" not in by_pair:
            raise RequestError(f"no model for {source} -> {target}; served: {', '.join(by_pair)}")
        return f"{source}-{target}"

    def texts_of(data: dict, key: str) -> tuple[list[str], bool]:
        if not isinstance(data, dict):
            raise RequestError("the body must be a JSON object")
        if key not in data:
            raise RequestError(f"missing field '{key}'")
        value = data[key]
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError(f"'{key}' must be a string or a list of strings")
        chars = sum(len(t) for t in texts)
        if chars > limits.max_text_chars:
            raise RequestError(
                f"{chars} characters of text, over the limit of {limits.max_text_chars}", 413
            )
        return texts, isinstance(value, str)

    def number(data: dict, key: str, kind: type, default):
        try:
            return default if data.get(key) in (None, "") else kind(data[key])
        except (TypeError, ValueError):
            raise RequestError(f"'{key}' must be a number, got {data[key]!r}") from None

    async def libre_translate(request: Request) -> Response:
        data = await body(request, forms=True)  # as LibreTranslate: JSON or a form
        texts, single = texts_of(data, "q")
        for key in ("source", "target"):
            if not data.get(key):
                raise RequestError(f"missing field '{key}'")
        chosen = pair(data["source"], data["target"])
        fmt = data.get("format") or "text"
        if fmt not in ("text", "html"):
            raise RequestError(f"'format' must be text or html, got {fmt!r}")
        alternatives = number(data, "alternatives", int, 0)
        if not 0 <= alternatives <= 10:
            raise RequestError(f"'alternatives' must be between 0 and 10, got {alternatives}")
        nbest = 1 if fmt == "html" else 1 + alternatives
        results = await batcher.translate(chosen, texts, (fmt, None, nbest, None))
        best = [r if fmt == "html" else r[0].text for r in results]
        answer = {"translatedText": best[0] if single else best}
        if alternatives:
            others = [[] if fmt == "html" else [h.text for h in r[1:]] for r in results]
            answer["alternatives"] = others[0] if single else others
        if data["source"] == "auto":
            detected = {"confidence": 100.0, "language": chosen.split("-")[0]}
            answer["detectedLanguage"] = detected if single else [detected] * len(texts)
        return JSONResponse(answer)

    async def languages(request: Request) -> Response:
        sources: dict[str, list[str]] = {}
        for p in by_pair:
            sources.setdefault(p.split("-")[0], []).append(p.split("-")[1])
        return JSONResponse(
            [
                {"code": s, "name": LANGUAGE_NAMES.get(s, s), "targets": t}
                for s, t in sources.items()
            ]
        )

    async def onmt_translate(request: Request) -> Response:
        data = await body(request)
        if not isinstance(data, list) or not all(
            isinstance(x, dict) and isinstance(x.get("src"), str) for x in data
        ):
            raise RequestError('expected a list of {"src": text, "id": model}')
        pairs = list(by_pair)
        ids = {x.get("id", 0) for x in data}
        if not ids <= set(range(len(pairs))):
            raise RequestError(f"model ids {sorted(ids, key=str)}: served are 0-{len(pairs) - 1}")
        out = []
        for model in sorted(ids):
            items = [x for x in data if x.get("id", 0) == model]
            found = await batcher.translate(
                pairs[model], [x["src"] for x in items], ("text", None, 1, None)
            )
            out += [
                {"src": x["src"], "tgt": r[0].text, "n_best": 1, "pred_score": r[0].score}
                for x, r in zip(items, found, strict=True)
            ]
        return JSONResponse([out])

    async def native_translate(request: Request) -> Response:
        data = await body(request)
        texts, _ = texts_of(data, "text")
        chosen = pair(data.get("source"), data.get("target"))
        beam, alpha = number(data, "beam", int, None), number(data, "alpha", float, None)
        nbest = number(data, "nbest", int, 1)
        if beam is not None and nbest > beam:
            raise RequestError(f"nbest {nbest} needs a beam of {nbest} or more")
        check_options(beam=beam, nbest=nbest, alpha=alpha)
        results = await batcher.translate(chosen, texts, ("text", beam, nbest, alpha))
        return JSONResponse(
            {
                "pair": chosen,
                "translations": [
                    {
                        "nbest": [
                            {
                                "text": h.text,
                                "score": h.score,
                                "logprob": h.logprob,
                                "alignment": h.alignment_pairs(),
                            }
                            for h in r
                        ]
                    }
                    for r in results
                ],
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "pairs": list(by_pair)})

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(batcher.pending), media_type="text/plain")

    routes = [
        Route("/translate", endpoint(libre_translate), methods=["POST"]),
        Route("/languages", endpoint(languages), methods=["GET"]),
        Route("/translator/translate", endpoint(onmt_translate), methods=["POST"]),
        Route("/v1/translate", endpoint(native_translate), methods=["POST"]),
        Route("/health", endpoint(health), methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    return Starlette(routes=routes, lifespan=lifespan)


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

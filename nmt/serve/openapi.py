"""The OpenAPI 3.0 document `nmt serve` publishes at /openapi.json (and, as LibreTranslate,
at /spec): each endpoint's request and response bodies and status codes, for clients,
generators and fuzzers (tests/test_serve_schema.py runs schemathesis through it). Plain
dicts: the handlers read their parameters at the door (`nmt.serve.door`), which also
takes them from the query string; the search options' schemas are derived from
`nmt.options.SEARCH`, the rest is written here and the test keeps the two in step."""

from __future__ import annotations

import math

from nmt.options import MAX_BEAM, MAX_PHRASE_CHARS, SEARCH, Option, parse_interval

# the search options a request may set: all but max_tokens, a batch size the server decides
SERVED = [name for name in SEARCH if name != "max_tokens"]
ALTERNATIVES = Option("alternatives", int, f"[0, {MAX_BEAM - 1}]", "LibreTranslate's: nbest - 1")

STR, NUM, INT = ({"type": kind} for kind in ("string", "number", "integer"))


def _array(items: dict, description: str = "") -> dict:
    return {
        "type": "array",
        "items": items,
        **({"description": description} if description else {}),
    }


def _object(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


def _matrix(description: str) -> dict:
    return _array(_array(NUM), description)


ERROR = _object(["error"], error={**STR, "description": "what was wrong, naming it"})
KEY = {**STR, "description": "an API key, where the server asks for one (--api-keys)"}
FAILURES = {  # what any endpoint may answer
    "400": "a bad or missing field, not text (a lone surrogate), an unknown pair, over a limit",
    "403": "no valid API key, where the server needs one",
    "408": "the body did not arrive in time",
    "413": "the body over the limit",
    "429": "over the request limit: retry after Retry-After seconds",
    "500": "the server failed (logged, counted in /metrics)",
    "503": "busy or shutting down: retry after Retry-After seconds",
}
TEXTS = {"oneOf": [STR, _array(STR)]}


def document(pairs: list[str], limits) -> dict:
    """The document for a server of `pairs` ("de-en", ...) under `limits` (a `Limits`)."""
    sources = sorted({p.split("-")[0] for p in pairs})
    targets = sorted({p.split("-")[1] for p in pairs})
    pair = {"source": {**STR, "enum": sources}, "target": {**STR, "enum": targets}}
    most = f"{limits.char_limit} characters each, {limits.batch_limit} texts at most"
    texts = {**TEXTS, "description": most}
    languages = _object(["code", "name", "targets"], code=STR, name=STR, targets=_array(STR))
    health = _object(["status", "pairs"], status=STR, pairs=_array(STR))
    detected = _array(_object(["confidence", "language"], confidence=NUM, language=STR))
    detect = _object(["q"], q=texts, api_key=KEY)
    settings = {"type": "object", "required": ["charLimit", "apiKeys", "keyRequired", "language"]}
    disabled = _post("off, as on a LibreTranslate server with it off", {"type": "object"}, ERROR)
    paths = {
        "/translate": {"post": _libre_translate(pair, texts)},
        "/detect": {"post": _post("LibreTranslate's detect", detect, detected, forms=True)},
        "/languages": {"get": _get("every language served, with its targets", _array(languages))},
        "/frontend/settings": {"get": _get("LibreTranslate's settings for a page", settings)},
        "/suggest": {"post": disabled},
        "/spec": {
            "get": _get("this document, where LibreTranslate has its own", {"type": "object"})
        },
        "/translator/translate": {"post": _onmt_translate(len(pairs))},
        "/v1/translate": {"post": _native_translate(pair, texts)},
        "/v1/inspect": {"post": _inspect(pair, limits.max_inspect_chars)},
        "/health": {"get": _get("ready: the models are loaded", health)},
        "/metrics": {"get": _get("Prometheus' text format", STR, "text/plain")},
        "/openapi.json": {"get": _get("this document", {"type": "object"})},
        "/": {"get": _get("the page: translate and look inside", STR, "text/html")},
        **_files(pair),
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "nmt serve", "version": "1"},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR}},
    }


def _get(summary: str, schema: dict, media: str = "application/json") -> dict:
    return {"summary": summary, "responses": _responses(_content("OK", schema, media))}


def _responses(ok: dict) -> dict:
    responses = {"200": ok} | {code: _content(why, ERROR) for code, why in FAILURES.items()}
    for code in ("429", "503"):
        responses[code]["headers"] = {"Retry-After": {"schema": STR}}
    return responses


def _post(summary: str, body: dict, answer: dict, *, forms: bool = False) -> dict:
    kinds = ["application/json"] + (["application/x-www-form-urlencoded"] * forms)
    responses = _responses(_content("OK", answer))
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {k: {"schema": body} for k in kinds}},
        "responses": responses,
    }


def _files(pair: dict) -> dict:
    """LibreTranslate's file endpoints (`nmt.serve.files`) and the form that uses them."""
    upload = _object(["file", "source", "target"], file={**STR, "format": "binary"}, **pair)
    answer = _object(["translatedFileUrl"], translatedFileUrl=STR)
    responses = {
        "200": _content("OK: where to download the translated file", answer),
        "400": _content(
            "not a form, a missing field, an unknown pair or format, a bad file", ERROR
        ),
        "413": _content("the upload over the limit", ERROR),
        "503": _content("busy: retry after Retry-After seconds", ERROR),
    }
    name = {"name": "name", "in": "path", "required": True, "schema": STR}
    download = {
        "200": _content("the translated file", STR, "application/octet-stream"),
        "404": _content("no such file: expired, or never made", ERROR),
    }
    return {
        "/translate_file": {
            "post": {
                "summary": "translate a document (every format of nmt translate)",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": upload}},
                },
                "responses": responses,
            }
        },
        "/download_file/{name}": {
            "get": {"summary": "a translated file", "parameters": [name], "responses": download}
        },
        "/files": {"get": _get("the form that translates a file", STR, "text/html")},
    }


def _content(description: str, schema: dict, media: str = "application/json") -> dict:
    return {"description": description, "content": {media: {"schema": schema}}}


def _schema(option: Option) -> dict:
    """An option's JSON schema: its kind and `nmt.options` bounds."""
    low, high, low_in, high_in = parse_interval(option.bounds)
    schema = {**(INT if option.kind is int else NUM), "minimum": low}
    schema.update({} if low_in else {"exclusiveMinimum": True})
    if math.isfinite(high):
        schema.update({"maximum": high, **({} if high_in else {"exclusiveMaximum": True})})
    return {**schema, "description": option.help}


def _libre_translate(pair: dict, texts: dict) -> dict:
    source = {**pair["source"], "enum": [*pair["source"]["enum"], "auto"]}
    formats = {**STR, "enum": ["text", "html"]}
    body = _object(["q", "source", "target"], q=texts, **{**pair, "source": source}, format=formats)
    body["properties"]["alternatives"] = _schema(ALTERNATIVES)
    body["properties"]["api_key"] = KEY
    detected = _object(["language"], language=STR, confidence=NUM)
    answer = _object(
        ["translatedText"],
        translatedText=TEXTS,
        alternatives=_array({}),
        detectedLanguage={"oneOf": [detected, _array(detected)]},
    )
    return _post("LibreTranslate's translate", body, answer, forms=True)


def _onmt_translate(models: int) -> dict:
    item = _object(["src"], src=STR, id={**INT, "minimum": 0, "maximum": models - 1})
    row = _object(
        ["src", "tgt", "n_best", "pred_score"], src=STR, tgt=STR, n_best=INT, pred_score=NUM
    )
    return _post("OpenNMT-py's translate", _array(item), _array(_array(row)))


def _native_translate(pair: dict, texts: dict) -> dict:
    search = {name: _schema(SEARCH[name]) for name in SERVED}
    attend = {"type": "boolean", "description": "each hypothesis with its attention"}
    body = _object(["text", "source", "target"], text=texts, **pair, **search, attention=attend)
    body["properties"].update(_terms())
    weights = _matrix("row t: what target piece t attended to over the source pieces")
    attention = _object(
        ["source", "target", "weights"], source=_array(STR), target=_array(STR), weights=weights
    )
    alignment = {**STR, "description": "'i-j': source piece i, target piece j"}
    hypothesis = _object(
        ["text", "score", "logprob", "alignment"],
        text=STR,
        score=NUM,
        logprob=NUM,
        alignment=alignment,
        attention=attention,
        missed={**INT, "description": "required phrases it lacks (none met them all)"},
    )
    line = _object(["nbest"], nbest=_array(hypothesis))
    answer = _object(["pair", "translations"], pair=STR, translations=_array(line))
    return _post("n-best lists with scores, alignments and attention", body, answer)


def _terms() -> dict:
    """The native API's constraints for every text (`nmt.options.Constraints`)."""
    phrase = {**STR, "minLength": 1, "maxLength": MAX_PHRASE_CHARS}
    choice = {"oneOf": [phrase, _array(phrase)]}
    return {
        "constraints": _array(choice, "phrases the translation must hold (a list: any one)"),
        "avoid": _array(phrase, "phrases it must not hold"),
        "prefix": {**phrase, "description": "what it begins with"},
        "glossary": _array(
            {**_array(STR), "minItems": 2, "maxItems": 2},
            "[source term, target term] pairs, over the server's --glossary",
        ),
    }


def _inspect(pair: dict, most_chars: int) -> dict:
    text = {**STR, "description": f"one sentence, {most_chars} at most"}
    body = _object(["text", "source", "target"], text=text, **pair, beam=_schema(SEARCH["beam"]))
    steps, pieces = _matrix("steps x units"), _array(STR)
    trace = _object(
        ["pieces", "units", "input", "forget", "output", "cell", "moving", "distinctive"],
        pieces={**STR, "enum": ["source", "target"]},
        units=INT,
        **dict.fromkeys(("input", "forget", "output", "cell"), steps),
        moving=_array(INT),
        distinctive=_array(_array(INT)),
    )
    traces = ["encoder_forward", "encoder_backward", "decoder"]
    answer = _object(
        ["pair", "sentence", "translation", "source", "target", "attention", "traces"],
        pair=STR,
        sentence=STR,
        translation=STR,
        source=pieces,
        target=pieces,
        attention=_matrix("target pieces x source pieces"),
        traces=_object(traces, **dict.fromkeys(traces, trace)),
    )
    return _post("one sentence's attention, gates and memory cells", body, answer)

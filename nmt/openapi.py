"""The OpenAPI 3.0 document `nmt serve` publishes at /openapi.json: each endpoint's
request and response bodies and status codes, for clients, generators and fuzzers
(tests/test_serve_schema.py runs schemathesis through it). Written by hand, as plain
dicts: the handlers in `nmt.serve` read their JSON themselves, so there are no models
to generate it from; the test keeps the two in step."""

from __future__ import annotations

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what was wrong, naming it"}},
}
TEXTS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


def document(pairs: list[str], limits) -> dict:
    """The document for a server of `pairs` ("de-en", ...) under `limits` (a `Limits`)."""
    sources = sorted({p.split("-")[0] for p in pairs})
    targets = sorted({p.split("-")[1] for p in pairs})
    paths = {
        "/translate": {"post": _libre_translate(sources, targets, limits)},
        "/languages": {"get": _get("the language pairs served", _languages())},
        "/translator/translate": {"post": _onmt_translate(len(pairs))},
        "/v1/translate": {"post": _native_translate(sources, targets, limits)},
        "/v1/inspect": {"post": _inspect(sources, targets, limits)},
        "/health": {"get": _get("ready: the models are loaded", _health())},
        "/metrics": {"get": _get("Prometheus' text format", {"type": "string"}, "text/plain")},
        "/openapi.json": {"get": _get("this document", {"type": "object"})},
        "/": {"get": _get("the page: translate and look inside", {"type": "string"}, "text/html")},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "nmt serve", "version": "1"},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR}},
    }


def _get(summary: str, schema: dict, media: str = "application/json") -> dict:
    return {"summary": summary, "responses": {"200": _content("OK", schema, media)}}


def _post(summary: str, body: dict, answer: dict, *, forms: bool = False) -> dict:
    kinds = ["application/json"] + (["application/x-www-form-urlencoded"] * forms)
    responses = {
        "200": _content("OK", answer),
        "400": _content("bad JSON, a missing or bad field, an unknown pair", ERROR),
        "413": _content("the body or its text over the limit", ERROR),
        "503": _content("busy: retry after Retry-After seconds", ERROR),
    }
    responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {k: {"schema": body} for k in kinds}},
        "responses": responses,
    }


def _content(description: str, schema: dict, media: str = "application/json") -> dict:
    return {"description": description, "content": {media: {"schema": schema}}}


def _object(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


def _libre_translate(sources: list[str], targets: list[str], limits) -> dict:
    body = _object(
        ["q", "source", "target"],
        q={**TEXTS, "description": f"{limits.max_text_chars} characters at most in all"},
        source={"type": "string", "enum": [*sources, "auto"]},
        target={"type": "string", "enum": targets},
        format={"type": "string", "enum": ["text", "html"]},
        alternatives={"type": "integer", "minimum": 0, "maximum": 10},
    )
    detected = _object(["language"], language={"type": "string"}, confidence={"type": "number"})
    answer = _object(
        ["translatedText"],
        translatedText=TEXTS,
        alternatives={"type": "array", "items": {}},
        detectedLanguage={"oneOf": [detected, {"type": "array", "items": detected}]},
    )
    return _post("LibreTranslate's translate", body, answer, forms=True)


def _languages() -> dict:
    language = _object(
        ["code", "name", "targets"],
        code={"type": "string"},
        name={"type": "string"},
        targets={"type": "array", "items": {"type": "string"}},
    )
    return {"type": "array", "items": language}


def _onmt_translate(models: int) -> dict:
    item = _object(
        ["src"], src={"type": "string"}, id={"type": "integer", "minimum": 0, "maximum": models - 1}
    )
    row = _object(
        ["src", "tgt", "n_best", "pred_score"],
        src={"type": "string"},
        tgt={"type": "string"},
        n_best={"type": "integer"},
        pred_score={"type": "number"},
    )
    answer = {"type": "array", "items": {"type": "array", "items": row}}
    return _post("OpenNMT-py's translate", {"type": "array", "items": item}, answer)


def _search(limits) -> dict:
    most = limits.max_beam
    return {
        "beam": {"type": "integer", "minimum": 1, "maximum": most},
        "nbest": {"type": "integer", "minimum": 1, "maximum": most},
        "alpha": {"type": "number", "minimum": 0, "maximum": 10},
    }


def _native_translate(sources: list[str], targets: list[str], limits) -> dict:
    body = _object(
        ["text", "source", "target"],
        text={**TEXTS, "description": f"{limits.max_text_chars} characters at most in all"},
        source={"type": "string", "enum": sources},
        target={"type": "string", "enum": targets},
        **_search(limits),
        attention={"type": "boolean", "description": "each hypothesis with its attention"},
    )
    attention = _object(
        ["source", "target", "weights"],
        source={"type": "array", "items": {"type": "string"}},
        target={"type": "array", "items": {"type": "string"}},
        weights=_matrix("row t: what target piece t attended to over the source pieces"),
    )
    hypothesis = _object(
        ["text", "score", "logprob", "alignment"],
        text={"type": "string"},
        score={"type": "number"},
        logprob={"type": "number"},
        alignment={"type": "string", "description": "'i-j': source piece i, target piece j"},
        attention=attention,
    )
    line = _object(["nbest"], nbest={"type": "array", "items": hypothesis})
    answer = _object(
        ["pair", "translations"],
        pair={"type": "string"},
        translations={"type": "array", "items": line},
    )
    return _post("n-best lists with scores, alignments and attention", body, answer)


def _inspect(sources: list[str], targets: list[str], limits) -> dict:
    body = _object(
        ["text", "source", "target"],
        text={"type": "string", "description": f"one sentence, {limits.max_inspect_chars} at most"},
        source={"type": "string", "enum": sources},
        target={"type": "string", "enum": targets},
        beam=_search(limits)["beam"],
    )
    steps = _matrix("steps x units")
    trace = _object(
        ["pieces", "units", "input", "forget", "output", "cell", "moving", "distinctive"],
        pieces={"type": "string", "enum": ["source", "target"]},
        units={"type": "integer"},
        input=steps,
        forget=steps,
        output=steps,
        cell=steps,
        moving={"type": "array", "items": {"type": "integer"}},
        distinctive={"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    )
    pieces = {"type": "array", "items": {"type": "string"}}
    answer = _object(
        ["pair", "sentence", "translation", "source", "target", "attention", "traces"],
        pair={"type": "string"},
        sentence={"type": "string"},
        translation={"type": "string"},
        source=pieces,
        target=pieces,
        attention=_matrix("target pieces x source pieces"),
        traces=_object(
            ["encoder_forward", "encoder_backward", "decoder"],
            encoder_forward=trace,
            encoder_backward=trace,
            decoder=trace,
        ),
    )
    return _post("one sentence's attention, gates and memory cells", body, answer)


def _matrix(description: str) -> dict:
    row = {"type": "array", "items": {"type": "number"}}
    return {"type": "array", "items": row, "description": description}


def _health() -> dict:
    return _object(
        ["status", "pairs"],
        status={"type": "string"},
        pairs={"type": "array", "items": {"type": "string"}},
    )

"""The server as its OpenAPI document (/openapi.json) says it is: schemathesis generates
requests from the document (valid ones, and invalid ones for the bodies), sends them to
the app in-process (ASGI, the tiny model behind it) and checks that no answer is a 5xx
and that each answer's status, content type, headers and body are the document's."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nmt.serve.app import build_app
from nmt.serve.batcher import Limits
from nmt.serve.openapi import document
from nmt.translate import Translator

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [  # (method, path, generation mode): bodies valid and not
    (method, path, mode)
    for path, methods in document(["de-en"], Limits())["paths"].items()
    if path != "/openapi.json"  # schemathesis leaves the document itself out
    for method in methods
    for mode in (GenerationMode if method == "post" else [GenerationMode.POSITIVE])
]


@pytest.fixture(scope="module")
def translator(trained_run):
    return Translator.load(trained_run, precision="fp32")


@pytest.fixture
def app(translator):
    # one app per test: schemathesis' pytest plugin ends every ASGI app's lifespan (and so
    # its batcher) when a test ends
    return build_app([translator])


@pytest.fixture
def app_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_no_answer_is_a_server_error_and_each_is_as_the_schema_says(app_schema, method, path, mode):
    operation = app_schema[path][method.upper()]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=25 if method == "post" else 1,
        deadline=None,
        derandomize=True,  # the same requests every run: a failure comes back
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def each(case):
        case.call_and_validate(checks=CHECKS, timeout=60)  # a loaded CI machine is slow

    each()


def test_the_schema_documents_every_endpoint_the_app_routes(app, app_schema):
    routed = {
        (route.path, m.lower()) for route in app.routes for m in getattr(route, "methods", [])
    }
    documented = {(p, m) for p, methods in app_schema.raw_schema["paths"].items() for m in methods}

    assert routed - {(p, "head") for p, _ in routed} == documented

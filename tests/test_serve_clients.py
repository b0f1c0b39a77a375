"""LibreTranslate's real clients, unchanged, against a real `nmt serve`: libretranslatepy
(form bodies; a GET with a body for /languages) and deep_translator's LibreTranslator
(every parameter in the query string, no body). Then what an operator sets up as on a
LibreTranslate server: API keys from `nmt serve keys` (403 without a valid one, 429 over
a key's limit), a character limit per text (400), CORS for the origins allowed."""

from __future__ import annotations

import urllib.error

import pytest
from deep_translator import LibreTranslator
from deep_translator.exceptions import AuthorizationException
from libretranslatepy import LibreTranslateAPI

from nmt import cli
from tests.test_serve import alone, call, serving, start

GERMAN = "Der hund läuft im park. Ein mann sieht die katze."


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run) as url:
        yield url


@pytest.fixture(scope="module")
def translator(trained_run):
    from nmt.translate import Translator

    return Translator.load(trained_run, precision="fp32")


def test_libretranslatepy_translates_lists_languages_and_detects(server, translator):
    client = LibreTranslateAPI(server)

    assert client.translate(GERMAN, "de", "en") == alone(translator, GERMAN)
    assert client.translate(GERMAN, "auto", "en") == alone(translator, GERMAN)
    assert [(lang["code"], lang["targets"]) for lang in client.languages()] == [
        ("de", ["en"]),
        ("en", []),
    ]
    detected = client.detect("Ein Hund läuft über die Wiese und ein Mann sieht zu.")
    assert detected[0]["language"] == "de" and detected[0]["confidence"] > 50
    assert client.detect("A dog is running across the meadow.")[0]["language"] == "en"


def test_deep_translator_translates_one_a_batch_and_from_auto(server, translator):
    client = LibreTranslator(source="de", target="en", api_key="any", custom_url=server + "/")
    auto = LibreTranslator(source="auto", target="en", api_key="any", custom_url=server + "/")
    english = "A man is looking at the dog."

    assert client.translate(GERMAN) == alone(translator, GERMAN)
    assert client.translate_batch([GERMAN, "Die frau."]) == [
        alone(translator, GERMAN),
        alone(translator, "Die frau."),
    ]
    assert auto.translate(GERMAN) == alone(translator, GERMAN)
    assert auto.translate(english) == english  # already English: as it is


@pytest.fixture(scope="module")
def keyed(trained_run, tmp_path_factory):
    """A server that needs API keys (two made by `nmt serve keys`), with a character
    limit, and CORS for one origin only -> (url, the keys)."""
    db = tmp_path_factory.mktemp("keys") / "keys.db"
    cli.main(["-q", "serve", "keys", "--db", str(db), "add", "100", "--key", "roomy"])
    cli.main(["serve", "keys", "--db", str(db), "add", "3", "--key", "tight", "--char-limit", "20"])
    options = ["--api-keys", str(db), "--char-limit", "200", "--cors-origins", "http://page.test"]
    process, url = start(trained_run, *options)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_without_a_valid_key_the_answer_is_403(keyed, translator):
    body = {"q": "Der hund.", "source": "de", "target": "en"}

    assert call(keyed, "/translate", {**body, "api_key": "roomy"})[1] == {
        "translatedText": alone(translator, "Der hund.")
    }
    missing, wrong = (
        call(keyed, "/translate", body),
        call(keyed, "/detect", {"q": "x", "api_key": "?"}),
    )
    assert (missing[0], wrong[0]) == (403, 403)
    assert "API key" in missing[1]["error"] and "invalid API key" == wrong[1]["error"]
    with pytest.raises(urllib.error.HTTPError, match="403"):
        LibreTranslateAPI(keyed).translate("Der hund.", "de", "en")
    assert LibreTranslateAPI(keyed, api_key="roomy").translate("Der hund.", "de", "en")
    with pytest.raises(AuthorizationException):
        LibreTranslator(source="de", target="en", api_key="no", custom_url=keyed + "/").translate(
            "Der hund."
        )
    assert call(keyed, "/languages")[0] == 200  # as LibreTranslate: no key to list them


def test_a_key_gets_its_own_limits_per_minute_and_per_text(keyed):
    body = {"q": "Der hund.", "source": "de", "target": "en", "api_key": "tight"}

    statuses = [call(keyed, "/translate", body)[0] for _ in range(3)]
    over = call(keyed, "/translate", body)

    assert statuses == [200] * 3 and over[0] == 429
    assert "3 texts a minute" in over[1]["error"] and int(over[2]["Retry-After"]) >= 1
    long = call(keyed, "/translate", {**body, "api_key": "roomy", "q": "Der hund. " * 30})
    assert long[0] == 400 and "over the limit of 200" in long[1]["error"]


def test_cors_answers_the_allowed_origin_and_no_other(keyed, server):
    def answer(url: str, origin: str, path: str = "/translate", **extra):
        import http.client
        import urllib.parse

        parsed = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        connection.request(extra.pop("method", "POST"), path, b"{", {"Origin": origin, **extra})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("access-control-allow-origin")

    preflight = {"method": "OPTIONS", "Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "content-type"
    assert answer(keyed, "http://page.test", **preflight) == (200, "http://page.test")
    assert answer(keyed, "http://page.test") == (400, "http://page.test")  # errors too
    assert answer(keyed, "http://other.test")[1] is None
    for path in ["/translate", "/nowhere", "/languages"]:  # any origin, any answer: *
        assert answer(server, "http://anywhere.test", path)[1] == "*"

"""`nmt serve` as clients meet it: a real server process on a free loopback port, real
HTTP requests (urllib), the answers LibreTranslate's and OpenNMT-py's clients expect."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from nmt.reporting.inside import inspect_sentence
from nmt.text.documents import translate_lines
from nmt.text.markup import translate_html
from nmt.tokenizer import EOS
from nmt.translate import Translator

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, *options: str, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A server process of `run`; its stderr goes to `log` (read it after it stops), else
    to a pipe nobody reads: then the server must log little."""
    port = free_port()
    # fp32 unless asked: its translations are the ones a line gets alone (test_batching...)
    precision = [] if "--precision" in options else ["--precision", "fp32"]
    command = [sys.executable, "-m", "nmt", "serve", str(run), "--port", str(port), *precision]
    command += options
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr = log.open("w") if log else subprocess.PIPE
    server = subprocess.Popen(command, env=env, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if call(url, "/health")[0] == 200:
                return server, url
        except OSError:
            time.sleep(0.2)
        assert server.poll() is None, log.read_text() if log else server.stderr.read()
    raise AssertionError("the server did not come up")


def call(url: str, path: str, body=None, *, form: bool = False, raw: bytes | None = None):
    """-> (status, decoded JSON or text, headers)."""
    data, headers = raw, {"Content-Type": "application/json"}
    if body is not None:
        data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
        if form:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
    request = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, text, got = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as err:
        status, text, got = err.code, err.read().decode(), err.headers
    is_json = got.get("content-type", "").startswith("application/json")
    return status, json.loads(text) if is_json else text, got


@contextlib.contextmanager
def serving(run: Path, *options: str) -> Iterator[str]:
    """A server of `run` on a free loopback port -> its URL; stopped as SIGTERM stops it."""
    process, url = start(run, *options)
    try:
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run) as url:
        yield url


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.load(trained_run, precision="fp32")


def alone(translator, text: str) -> str:
    return next(translate_lines(translator, [text]))[0].text


def test_libretranslate_clients_get_what_nmt_translate_gives(server, translator):
    text = "Der hund läuft. Ein mann sieht die katze."
    body = {"q": text, "source": "de", "target": "en"}
    status, answer, _ = call(server, "/translate", body)
    assert status == 200 and answer == {"translatedText": alone(translator, text)}
    status, answer, _ = call(server, "/translate", {**body, "q": [text, "Die frau."]})
    assert answer["translatedText"] == [alone(translator, text), alone(translator, "Die frau.")]
    status, answer, _ = call(server, "/translate", {**body, "source": "auto"}, form=True)
    assert answer["translatedText"] == alone(translator, text)
    assert answer["detectedLanguage"]["language"] == "de"
    status, answer, _ = call(server, "/translate", {**body, "alternatives": 2})
    others = answer["alternatives"]  # as LibreTranslate's: distinct, the best left out
    assert 1 <= len(others) <= 2 and len(set(others)) == len(others)
    assert answer["translatedText"] not in others
    page = "<p>Der hund <b>läuft</b>.</p><script>der hund</script>"
    status, answer, _ = call(server, "/translate", {**body, "q": page, "format": "html"})
    assert answer["translatedText"] == translate_html(translator, page)
    status, languages, _ = call(server, "/languages")
    assert languages == [
        {"code": "de", "name": "German", "targets": ["en"]},
        {"code": "en", "name": "English", "targets": []},
    ]


def test_opennmt_clients_and_the_native_api(server, translator):
    status, answer, _ = call(server, "/translator/translate", [{"src": "Der hund.", "id": 0}])
    assert status == 200
    (row,) = answer[0]
    assert row["src"] == "Der hund." and row["tgt"] == alone(translator, "Der hund.")
    assert row["n_best"] == 1 and isinstance(row["pred_score"], float)
    body = {"text": ["Der hund läuft."], "source": "de", "target": "en", "beam": 3, "nbest": 3}
    status, answer, _ = call(server, "/v1/translate", body)
    (nbest,) = answer["translations"]
    expected = translator.translate(["Der hund läuft."], beam=3, nbest=3)[0]
    assert [h["text"] for h in nbest["nbest"]] == [h.text for h in expected]
    assert [h["score"] for h in nbest["nbest"]] == pytest.approx([h.score for h in expected])


def test_the_native_api_gives_each_hypothesis_the_attention_search_saw(server, translator):
    text, body = "Der hund sieht eine katze.", {"source": "de", "target": "en", "beam": 3}
    body = {**body, "text": [text, "Der hund läuft. Ein mann."], "nbest": 2, "attention": True}

    status, answer, _ = call(server, "/v1/translate", body)

    one, two = answer["translations"]
    expected = translator.translate([text], beam=3, nbest=2)[0]
    assert status == 200 and [h["text"] for h in one["nbest"]] == [h.text for h in expected]
    for hyp, got in zip(expected, one["nbest"], strict=True):
        attention, weights = got["attention"], torch.tensor(got["attention"]["weights"])
        assert attention["source"] == translator.src_tok.id_to_piece(translator.encode([text])[0])
        assert attention["target"] == translator.tgt_tok.id_to_piece([*hyp.tokens, EOS])
        assert weights.shape == (len(hyp.tokens) + 1, len(attention["source"]))
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(weights)), atol=2e-3, rtol=0)
        assert weights[:-1].argmax(-1).tolist() == list(hyp.alignment)  # what search chose
    both = two["nbest"][0]["attention"]  # two sentences: each attends within its own
    src_end, tgt_end = both["source"].index("</s>") + 1, both["target"].index("</s>") + 1
    assert both["source"].count("</s>") == both["target"].count("</s>") == 2
    weights = torch.tensor(both["weights"])
    assert weights[:tgt_end, src_end:].sum() == weights[tgt_end:, :src_end].sum() == 0
    plain = call(server, "/v1/translate", {**body, "attention": False})[1]["translations"]
    assert "attention" not in plain[0]["nbest"][0]
    assert [h["text"] for h in plain[0]["nbest"]] == [h["text"] for h in one["nbest"]]


def test_inspect_gives_every_units_gates_and_cell_at_every_step(server, translator):
    text = "Der hund sieht eine katze."

    status, found, _ = call(server, "/v1/inspect", {"text": text, "source": "de", "target": "en"})

    inspection = inspect_sentence(translator, text, beam=translator.cfg.decode.beam_size)
    assert status == 200 and found["translation"] == inspection.translation
    assert found["translation"] == translator.translate([text])[0][0].text
    assert (found["source"], found["target"]) == (inspection.src_pieces, inspection.out_pieces)
    for name, side in [("encoder_forward", "source"), ("encoder_backward", "source")] + [
        ("decoder", "target")
    ]:
        trace, steps = found["traces"][name], len(found[side])
        for key in ("input", "forget", "output", "cell"):
            assert torch.tensor(trace[key]).shape == (steps, trace["units"])
        assert len(set(trace["moving"])) == len(trace["moving"]) == 12
        assert torch.tensor(trace["distinctive"]).shape == (steps, 12)
    got = torch.tensor(found["traces"]["decoder"]["cell"], dtype=torch.float64)
    torch.testing.assert_close(got, inspection.decoder.cell.double(), atol=1e-3, rtol=0)


def test_the_page_and_its_files_are_served(server):
    status, page, headers = call(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page and call(server, f"/static/{name}")[0] == 200
    status, schema, _ = call(server, "/openapi.json")
    assert status == 200 and "/v1/inspect" in schema["paths"]


NATIVE = {"text": "Der hund.", "source": "de", "target": "en"}
BAD = [  # (path, body or raw bytes, status, what the message names)
    ("/translate", b"{not json", 400, "not valid JSON"),
    ("/translate", {"source": "de", "target": "en"}, 400, "'q'"),
    ("/translate", {"q": "x", "source": "fr", "target": "en"}, 400, "served: de-en"),
    ("/translate", {"q": 5, "source": "de", "target": "en"}, 400, "'q' must be"),
    ("/translate", {"q": "x", "source": "de", "target": "en", "format": "pdf"}, 400, "format"),
    ("/translate", {"q": "x" * 30_000, "source": "de", "target": "en"}, 400, "limit of 10000"),
    ("/translate", {"q": ["x", "x" * 10_001], "source": "de", "target": "en"}, 400, "item 1"),
    ("/translate", b"[" + b" " * (2 << 20) + b"]", 413, "limit"),
    ("/translator/translate", {"src": "x"}, 400, "src"),
    ("/translator/translate", [{"src": "x", "id": 7}], 400, "model ids"),
    ("/v1/translate", {"text": "x", "source": "de", "target": "en", "beam": 0}, 400, "beam"),
    ("/v1/translate", {"text": "x", "source": "de", "target": "en", "nbest": "a"}, 400, "nbest"),
    ("/v1/translate", {**NATIVE, "nbest": 2.5}, 400, "nbest must be an integer"),
    ("/v1/translate", {**NATIVE, "beam": 1000}, 400, "beam must be in [1, 64]"),
    ("/v1/translate", {**NATIVE, "alpha": 1e300}, 400, "alpha must be in [0, 10]"),
    ("/v1/translate", {**NATIVE, "attention": "yes"}, 400, "'attention'"),
    (
        "/v1/translate",
        b'{"text": "x", "source": "de", "target": "en", "beam": Infinity}',
        400,
        "beam",
    ),
    ("/translator/translate", [{"src": "x", "id": 0.5}], 400, "model ids"),
    ("/translator/translate", [{"src": "x", "id": [0]}], 400, "model ids"),
    ("/translator/translate", [{"src": "x" * 30_000}], 400, "limit"),
    ("/v1/inspect", {**NATIVE, "text": "x" * 2_000}, 400, "limit"),
    ("/v1/inspect", {**NATIVE, "text": "  "}, 400, "'text'"),
    ("/v1/inspect", {"source": "de", "target": "en"}, 400, "'text'"),
    ("/v1/inspect", {**NATIVE, "target": "fr"}, 400, "served: de-en"),
    ("/v1/inspect", {**NATIVE, "beam": 0}, 400, "beam"),
]


@pytest.mark.parametrize(("path", "body", "status", "named"), BAD)
def test_bad_requests_get_their_status_and_a_message(server, path, body, status, named):
    raw = body if isinstance(body, bytes) else None
    got, answer, _ = call(server, path, None if raw else body, raw=raw)
    assert got == status and named in answer["error"]
    assert call(server, "/translate", {"q": "Der hund.", "source": "de", "target": "en"})[0] == 200


def test_requests_that_arrive_together_share_a_batch_and_get_their_own_answer(server, translator):
    def metric(name: str) -> int:
        text = call(server, "/metrics")[1]
        return int(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))

    sentences = [f"Der hund {'läuft ' * (i % 4)}im park." for i in range(32)]
    before = metric("nmt_batches_total")
    with ThreadPoolExecutor(32) as pool:
        answers = list(
            pool.map(
                lambda s: call(server, "/translate", {"q": s, "source": "de", "target": "en"})[1][
                    "translatedText"
                ],
                sentences,
            )
        )
    assert answers == [alone(translator, s) for s in sentences]
    assert metric("nmt_batches_total") - before < 32 / 2  # not one batch per request


def test_sigterm_answers_every_request_in_flight_then_exits_0(trained_run):
    process, url = start(trained_run, "--max-wait-ms", "50")
    body = {"q": "Der hund läuft im park. " * 20, "source": "de", "target": "en"}
    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(call, url, "/translate", body) for _ in range(32)]
        time.sleep(0.3)  # the requests are in
        process.send_signal(signal.SIGTERM)
        statuses = [f.result()[0] for f in futures]
    assert statuses == [200] * 32
    assert process.wait(timeout=60) == 0


def test_past_the_pending_limit_the_answer_is_503_with_retry_after(trained_run):
    process, url = start(trained_run, "--max-pending", "2", "--max-wait-ms", "200")
    body = {"q": "Der hund läuft im park.", "source": "de", "target": "en"}
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: call(url, "/translate", body), range(16)))
        statuses = sorted(a[0] for a in answers)
        assert statuses[0] == 200 and statuses[-1] == 503 and set(statuses) == {200, 503}
        busy = next(a for a in answers if a[0] == 503)
        assert busy[2]["Retry-After"] == "1" and "busy" in busy[1]["error"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

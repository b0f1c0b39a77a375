"""A hostile client against a real `nmt serve`: no input reaches a 5xx, every refusal is
its 4xx with a JSON message naming what was wrong, and the good clients beside it get
exactly the translations they get alone.

Generated, not listed: a lone surrogate (or bytes that are not UTF-8) anywhere in any
string field of any endpoint, sent as JSON, a urlencoded form, a multipart form or the
query string; JSON nested past the limit, arrays past it, numbers that are not finite or
too long. Then the body's limits in size and time (chunked, slow, cut), clients that go
away, and a failure planted inside the model (an in-process server, so that it can be
planted): a 500, counted, logged once, and the batch it was in answered for the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.serve.app import build_app
from nmt.serve.limits import Limits
from nmt.translate import Translator
from tests.test_serve import alone, call, free_port, start

FIELDS = {  # endpoint -> a good request, every field as a form would send it
    "/translate": {"q": "Der hund.", "source": "de", "target": "en", "format": "text"}
    | {"alternatives": "1", "api_key": "k"},
    "/detect": {"q": "Der hund.", "api_key": "k"},
    "/v1/translate": {"text": "Der hund.", "source": "de", "target": "en", "beam": "2"}
    | {"nbest": "1", "alpha": "0.6", "attention": "false"},
    "/v1/inspect": {"text": "Der hund.", "source": "de", "target": "en", "beam": "2"},
    "/languages": {"x": "y"},  # GET endpoints read their query string at the same door
    "/frontend/settings": {"x": "y"},
}
TRANSPORTS = ["json", "form", "multipart", "query"]
HOSTILE = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def request(url: str, method: str, path: str, body: bytes = b"", headers=None, query=""):
    """-> (status, decoded JSON answer); raw bytes in and out, nothing repaired."""
    import http.client

    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request(method, path + (f"?{query}" if query else ""), body, headers or {})
        response = connection.getresponse()
        status, text = response.status, response.read()
        kind = response.getheader("content-type", "")
    finally:
        connection.close()
    assert kind.startswith("application/json"), (status, text[:200])
    return status, json.loads(text)


def encode(fields: dict, transport: str) -> tuple[bytes, dict, str]:
    """Fields (surrogates kept, as the UTF-8 bytes of no text) -> (body, headers, query)."""

    def raw(s: str) -> bytes:
        return s.encode("utf-8", "surrogatepass")

    if transport == "json":
        return json.dumps(fields).encode(), {"Content-Type": "application/json"}, ""
    pairs = "&".join(
        f"{urllib.parse.quote(raw(k))}={urllib.parse.quote(raw(v))}" for k, v in fields.items()
    )
    if transport == "query":
        return b"", {}, pairs
    if transport == "form":
        return pairs.encode(), {"Content-Type": "application/x-www-form-urlencoded"}, ""

    def header(name: bytes) -> bytes:  # as browsers escape a name in a part's header
        return name.replace(b'"', b"%22").replace(b"\r", b"%0D").replace(b"\n", b"%0A")

    boundary = uuid.uuid4().hex
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (boundary.encode(), header(raw(k)), raw(v))
        for k, v in fields.items()
    ]
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, ""


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    process, url = start(trained_run, "--body-timeout", "1.5", log=log)
    yield url, log
    process.terminate()
    process.wait(timeout=60)
    assert "Traceback" not in log.read_text()  # each refusal or disconnect: a line at most


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.load(trained_run, precision="fp32")


@st.composite
def unsound(draw) -> str:
    """Text with a lone surrogate somewhere in it."""
    text = draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=12))
    at = draw(st.integers(0, len(text)))
    return text[:at] + chr(draw(st.integers(0xD800, 0xDFFF))) + text[at:]


@HOSTILE
@given(
    path=st.sampled_from(sorted(FIELDS)),
    transport=st.sampled_from(TRANSPORTS),
    data=st.data(),
    bad=unsound(),
)
def test_text_that_is_not_unicode_is_refused_naming_its_field(server, path, transport, data, bad):
    fields = dict(FIELDS[path])
    name = data.draw(st.sampled_from([*fields, "a field name"]))
    if name == "a field name":
        fields[bad] = "x"
    else:
        fields[name] = bad
    if path in ("/languages", "/frontend/settings"):
        transport = "query"
    body, headers, query = encode(fields, transport)

    method = "GET" if path in ("/languages", "/frontend/settings") else "POST"
    status, answer = request(server[0], method, path, body, headers, query)

    assert status == 400 and f"'{name}'" in answer["error"] and "not text" in answer["error"]


@HOSTILE
@given(bad=unsound(), at=st.integers(0, 2), opennmt=st.booleans())
def test_a_lone_surrogate_inside_a_list_is_named_by_its_place(server, bad, at, opennmt):
    texts = ["Der hund.", "Die katze."]
    texts.insert(at, bad)
    if opennmt:
        body, named = [{"src": t, "id": 0} for t in texts], f"'[{at}].src'"
        path = "/translator/translate"
    else:
        body, named, path = {"q": texts, "source": "de", "target": "en"}, f"'q[{at}]'", "/translate"

    status, answer = request(server[0], "POST", path, json.dumps(body).encode())

    assert status == 400 and named in answer["error"]


NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", "-1e400", "9" * 21, "-" + "1" * 400]


@HOSTILE
@given(
    path=st.sampled_from(["/translate", "/v1/translate", "/v1/inspect", "/detect"]),
    number=st.sampled_from(NUMBERS),
    field=st.sampled_from(["beam", "alternatives", "q", "extra"]),
)
def test_numbers_that_are_not_finite_or_too_long_are_refused_naming_the_field(
    server, path, number, field
):
    good = json.dumps({k: v for k, v in FIELDS[path].items() if k != field})

    status, answer = request(server[0], "POST", path, f'{{"{field}": {number}, {good[1:]}'.encode())

    assert status == 400 and f"'{field}'" in answer["error"]


@HOSTILE
@given(
    path=st.sampled_from(["/translate", "/translator/translate", "/v1/translate", "/detect"]),
    depth=st.integers(17, 20_000),
    opening=st.sampled_from(["[", '{"a":']),
)
def test_json_nested_past_the_limit_is_refused_before_it_is_parsed(server, path, depth, opening):
    closing = "]" if opening == "[" else "}"
    body = (opening * depth + "1" + closing * depth).encode()

    status, answer = request(server[0], "POST", path, body)

    assert status == 400 and "nested deeper than 16" in answer["error"]


@pytest.mark.parametrize("path", ["/translate", "/translator/translate", "/v1/translate"])
def test_arrays_past_the_batch_limit_are_refused(server, path):
    items = ["x"] * 10_001
    body = (
        [{"src": "x"}] * 10_001 if path == "/translator/translate" else {"q": items, "text": items}
    )

    status, answer = request(server[0], "POST", path, json.dumps(body).encode())

    assert status == 400 and "10000 at most" in answer["error"]


def test_a_hostile_request_batched_with_good_ones_leaves_each_its_own_translation(
    server, translator
):
    sentences = [f"Der hund {'läuft ' * (i % 3)}im park." for i in range(20)]
    hostile = [
        (b'{"q": "Ein Hund \\ud800", "source": "de", "target": "en"}', 400),
        (b"[" * 5000, 400),
        (b'{"q": "x", "source": "de", "target": "en", "alternatives": NaN}', 400),
        ('{"q": "%s", "source": "de", "target": "en"}' % ("x" * 10_001), 400),
    ]

    def good(s: str) -> tuple[int, object]:
        return request(
            server[0],
            "POST",
            "/translate",
            json.dumps({"q": s, "source": "de", "target": "en"}).encode(),
        )

    with ThreadPoolExecutor(24) as pool:
        goods = [pool.submit(good, s) for s in sentences]
        bads = [
            pool.submit(
                request, server[0], "POST", "/translate", b if isinstance(b, bytes) else b.encode()
            )
            for b, _ in hostile
        ]
        answers = [f.result() for f in goods]
        refused = [f.result()[0] for f in bads]

    assert refused == [status for _, status in hostile]
    assert answers == [(200, {"translatedText": alone(translator, s)}) for s in sentences]


def raw_socket(url: str) -> socket.socket:
    parsed = urllib.parse.urlsplit(url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=10)


def head(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the answer on a raw socket (until it closes)."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_chunked_body_over_the_limit_is_413_while_it_arrives(server):
    sock = raw_socket(server[0])
    sock.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    with contextlib.suppress(OSError):  # the server may stop reading once it has refused
        for _ in range(40):  # 2.5 MiB of a body that never says how long it is
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    status, answer = head(sock)

    assert status == 413 and "limit" in answer["error"]


def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(server):
    sock = raw_socket(server[0])
    sock.sendall(
        b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )

    status, answer = head(sock)

    assert status == 413 and "50000000 bytes" in answer["error"]


def test_a_body_that_does_not_arrive_in_time_is_408(server):
    sock = raw_socket(server[0])
    sock.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    start = time.monotonic()

    status, answer = head(sock)

    assert status == 408 and "1.5 s" in answer["error"] and time.monotonic() - start < 5


def metric(url: str, name: str) -> float:
    text = call(url, "/metrics")[1]
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def test_clients_that_go_away_leave_one_line_each_and_nothing_pending(server, translator):
    url, log = server
    before = metric(url, "nmt_client_disconnects_total")
    # 6 x 300 sentences in the batcher at once, taking turns: none is done when all go
    body = json.dumps({"q": "Der hund läuft im park. " * 300, "source": "de", "target": "en"})
    sockets = []
    for cut in [False] * 6 + [True] * 4:  # gone before the answer; gone while sending
        sock = raw_socket(url)
        sent = body.encode()[: 20 if cut else None]
        sock.sendall(
            b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + sent
        )
        sockets.append(sock)
    time.sleep(0.05)
    for sock in sockets:
        sock.close()

    deadline = time.monotonic() + 30
    while metric(url, "nmt_client_disconnects_total") < before + 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(url, "nmt_client_disconnects_total") == before + 10
    assert metric(url, "nmt_pending_requests") == 0
    status, answer, _ = call(url, "/translate", {"q": "Der hund.", "source": "de", "target": "en"})
    assert status == 200 and answer["translatedText"] == alone(translator, "Der hund.")
    lines = log.read_text().splitlines()
    assert sum("client went away before its answer" in line for line in lines) >= 6
    assert sum("client went away while sending its body" in line for line in lines) >= 4


@contextlib.contextmanager
def in_process(app):
    """The app under uvicorn on a thread of this process -> its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


PLANTED = "groß klein groß klein"  # words the toy model knows: this part reaches the model


def test_a_failure_inside_the_model_is_a_counted_500_and_the_rest_of_its_batch_is_answered(
    trained_run, translator, caplog
):
    planted = Translator.load(trained_run, precision="fp32")
    translate = planted.translate

    def failing(texts, **options):
        if any(PLANTED in t for t in texts):
            raise RuntimeError("planted failure")
        return translate(texts, **options)

    planted.translate = failing
    sentences = [f"Der hund {'läuft ' * (i % 3)}im park." for i in range(10)]
    app = build_app([planted], Limits(max_wait_ms=300))
    with in_process(app) as url, caplog.at_level(logging.INFO, "nmt.serve"):
        with ThreadPoolExecutor(11) as pool:
            futures = [
                pool.submit(call, url, "/translate", {"q": s, "source": "de", "target": "en"})
                for s in [*sentences[:5], f"Ein mann. {PLANTED}.", *sentences[5:]]
            ]
            answers = [f.result()[:2] for f in futures]

        failed = answers.pop(5)
        assert failed[0] == 500 and "RuntimeError" in failed[1]["error"]
        assert answers == [(200, {"translatedText": alone(translator, s)}) for s in sentences]
        assert metric(url, 'nmt_requests_total{path="/translate",status="500"}') == 1
        assert metric(url, "nmt_server_errors_total") == 1
        assert metric(url, "nmt_batch_retries_total") >= 1  # they were one batch, then split
        assert call(url, "/translate", {"q": "Der hund.", "source": "de", "target": "en"})[0] == 200
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and "planted failure" in logged[0].getMessage()


def test_sigterm_beside_a_byte_a_second_body_exits_within_the_grace_and_answers_the_rest(
    trained_run, tmp_path, translator
):
    log = tmp_path / "server.log"
    process, url = start(trained_run, "--shutdown-grace", "2", "--max-wait-ms", "50", log=log)
    slow, answers = raw_socket(url), []
    slow.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")

    def trickle() -> None:  # a byte a second, until the server closes the connection
        with contextlib.suppress(OSError):
            for byte in b'{"q": "Der hund.", "source": "de", "target": "en"}':
                slow.sendall(bytes([byte]))
                time.sleep(1)

    threading.Thread(target=trickle, daemon=True).start()
    words = ["hund", "katze", "mann", "frau", "kind", "ball"]
    texts = [
        [f"Der {words[i % 6]} sieht {n} {words[n % 6]}." for n in range(100)] for i in range(8)
    ]
    time.sleep(1.5)  # the slow body has begun
    with ThreadPoolExecutor(8) as pool:
        body = {"source": "de", "target": "en"}
        futures = [pool.submit(call, url, "/translate", {**body, "q": t}) for t in texts]
        time.sleep(0.2)  # the complete requests are in, and being translated
        in_flight = sum(not f.done() for f in futures)
        process.terminate()
        stopped = time.monotonic()
        status = process.wait(timeout=30)
        took = time.monotonic() - stopped
        answers = [f.result()[:2] for f in futures]

    assert in_flight > 0 and status == 0 and took <= 2 + 1, (in_flight, took)
    print(f"SIGTERM with {in_flight} of 8 in flight: exit 0 after {took:.2f} s")
    assert [status for status, _ in answers] == [200] * 8
    assert [a["translatedText"][:3] for _, a in answers] == [
        [alone(translator, line) for line in t[:3]] for t in texts
    ]
    assert head(slow)[0] == 503  # the stuck body: told, and its connection closed
    assert "Traceback" not in log.read_text()

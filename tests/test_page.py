"""The page at `/` in a real browser: Debian's chromium, headless, driven by playwright,
against a real server on a free loopback port (as tests/test_serve.py starts it).

Skipped where chromium or playwright is missing, except in CI (CI=true), where that is
a failure: CI installs both (.ci/run). Never `playwright install`: its downloads are
not reachable from CI, and Debian's chromium is enough."""

from __future__ import annotations

import http.server
import importlib.util
import os
import threading
from pathlib import Path

import pytest

from tests.test_serve import call, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    *("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]
TEXT = "Der hund sieht eine katze im park."

# The centre pixel of each cell of a heat map the page drew (heatmap() in app.js keeps
# its geometry on the canvas), and the row labels' units where it draws units.
CELLS = """(canvas) => {
  const g = canvas.geometry, ratio = canvas.width / parseFloat(canvas.style.width);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const rows = [];
  for (let r = 0; r < g.rows; r++) {
    const row = [];
    for (let c = 0; c < g.cols; c++) {
      const x = Math.round((g.left + (c + 0.5) * g.cell) * ratio);
      const y = Math.round((g.top + (r + 0.5) * g.cell) * ratio);
      const i = (y * canvas.width + x) * 4;
      row.push([data[i], data[i + 1], data[i + 2]]);
    }
    rows.push(row);
  }
  return rows;
}"""


def missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright (pip install -e '.[dev]')"
    return None if CHROMIUM.exists() else f"{CHROMIUM} (apt-get install chromium)"


IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
if missing() and not IN_CI:  # skipped before the model is trained
    pytest.skip(f"{missing()} is missing", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    if missing():
        pytest.fail(f"CI runs the browser test, but {missing()} is missing")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run) as url:
        yield url


def test_the_page_translates_and_draws_the_attention_and_each_units_gates(browser, server):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, elsewhere = [], []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("request", lambda r: r.url.startswith((server, "data:")) or elsewhere.append(r.url))
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#pair option').length > 0")

    page.fill("#text", TEXT)
    page.click("#go")
    page.wait_for_selector("#gates canvas", timeout=60_000)

    body = {"text": TEXT, "source": "de", "target": "en", "beam": 5, "nbest": 5, "attention": True}
    nbest = call(server, "/v1/translate", body)[1]["translations"][0]["nbest"]
    assert page.text_content("#translation") == nbest[0]["text"]
    assert page.locator("#nbest tbody tr").count() == len(nbest)
    weights = nbest[0]["attention"]["weights"]
    cells = page.eval_on_selector("#attention", CELLS)
    assert len(cells) == len(weights) and len(cells[0]) == len(weights[0])
    for row, drawn in zip(weights, cells, strict=True):  # the darkest cell: the most weight
        darkest = min(range(len(drawn)), key=lambda c: sum(drawn[c]))
        assert row[darkest] >= max(row) - 0.02  # (colours have 8 bits: near-ties may swap)

    inside = call(server, "/v1/inspect", {"text": TEXT, "source": "de", "target": "en", "beam": 5})
    decoder = inside[1]["traces"]["decoder"]
    panels = page.locator("#gates canvas")
    assert panels.count() == 4  # input, forget, output gates and the memory cell
    for i in range(4):
        drawn = panels.nth(i).evaluate(CELLS)
        assert len(drawn) == 10 and len(drawn[0]) == len(inside[1]["target"])
        assert len({tuple(pixel) for row in drawn for pixel in row}) > 5  # not one flat colour
    assert readout_units(page) == decoder["moving"][:10]

    page.locator("#words button").nth(1).click()  # LSTMVis: the units that mark this step
    assert readout_units(page) == decoder["distinctive"][1][:10]
    assert "distinctive" in page.text_content("#units-caption")
    assert not errors and not elsewhere


def readout_units(page) -> list[int]:
    return [int(u) for u in page.locator("#readout tr td:first-child").all_text_contents()]


def test_the_page_names_both_languages_shows_the_servers_error_and_clears_the_old_answer(
    browser, server
):
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#pair option').length > 0")
    assert page.text_content("#pair option") == "German (de) → English (en)"
    page.fill("#text", TEXT)
    page.click("#go")
    page.wait_for_selector("#gates canvas", timeout=60_000)

    page.fill("#text", "x" * 10_001)  # over the server's character limit
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').classList.contains('error')")

    said = call(server, "/v1/translate", {"text": "x" * 10_001, "source": "de", "target": "en"})
    assert page.text_content("#status") == f"400 Bad Request: {said[1]['error']}"
    assert page.is_hidden("#result") and page.is_hidden("#inside")
    assert page.text_content("#translation") == ""

    # a proxy's answer that is not JSON (what "Internal Server Error" was to the old page)
    page.route("**/v1/translate", lambda route: route.fulfill(status=502, body="Bad Gateway"))
    page.fill("#text", TEXT)
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('502')")
    assert "Bad Gateway" in page.text_content("#status") and page.is_hidden("#result")


ELSEWHERE = """<!doctype html><meta charset="utf-8"><body><script>
fetch("%s/translate", {method: "POST", headers: {"Content-Type": "application/json"},
       body: JSON.stringify({q: "%s", source: "de", target: "en"})})
  .then((r) => r.json())
  .then((a) => { document.body.dataset.done = a.translatedText; })
  .catch((e) => { document.body.dataset.done = "failed: " + e; });
</script></body>"""


def test_a_page_on_another_origin_translates_through_fetch(browser, server, trained_run):
    from nmt.text.documents import translate_lines
    from nmt.translate import Translator

    page = browser.new_page()
    html = (ELSEWHERE % (server, TEXT)).encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(html)

    # another origin: another server on the loopback (a page the browser made up itself
    # counts as public, and chromium keeps public pages off the loopback whatever CORS says)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as elsewhere:
        threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
        page.goto(f"http://localhost:{elsewhere.server_address[1]}/")
        page.wait_for_function("document.body.dataset.done !== undefined", timeout=60_000)
        elsewhere.shutdown()

    translator = Translator.load(trained_run, precision="fp32")
    expected = next(translate_lines(translator, [TEXT]))[0].text
    assert page.evaluate("document.body.dataset.done") == expected  # JSON: a CORS preflight

"""The page at `/` in a real browser: Debian's chromium, headless, driven by playwright,
against a real server on a free loopback port (as tests/test_serve.py starts it).

Skipped where chromium or playwright is missing, except in CI (CI=true), where that is
a failure: CI installs both (.ci/run). Never `playwright install`: its downloads are
not reachable from CI, and Debian's chromium is enough."""

from __future__ import annotations

import importlib.util
import os
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

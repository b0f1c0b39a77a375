"""`nmt serve`'s language detection on Multi30k, through a real server.

    python scripts/bench_detect.py RUN [--sentences 1000]

Sends the first N German and the first N English sentences of test_2016_flickr to
/detect, one request each (as libretranslatepy does), and prints the accuracy per
language; then translates the whole German side through /translate with `source: auto`
and with `source: de`, and prints both BLEU scores against the English references
(sacrebleu, its defaults) and how many lines the two translations differ in.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import sacrebleu

from nmt.data import read_lines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_serve import MULTI30K, free_port, wait_for  # noqa: E402


def post(url: str, body: dict):
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--sentences", type=int, default=1000, help="per language")
    args = parser.parse_args()
    german = read_lines(MULTI30K / "test_2016_flickr.de.gz")
    english = read_lines(MULTI30K / "test_2016_flickr.en.gz")
    port = free_port()
    command = [sys.executable, "-m", "nmt", "-q", "serve", args.run, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url + "/health", process)
        for code, lines in (("de", german), ("en", english)):
            found = [
                post(url + "/detect", {"q": s})[0]["language"] for s in lines[: args.sentences]
            ]
            right = sum(f == code for f in found)
            wrong = sorted({s for s, f in zip(lines, found, strict=False) if f != code})[:3]
            print(f"{code}: {right}/{len(found)} detected = {100 * right / len(found):.2f}% "
                  f"(missed, first 3: {wrong})", flush=True)  # fmt: skip
        outputs = {}
        for source in ("auto", "de"):
            body = {"q": german, "source": source, "target": "en"}
            outputs[source] = post(url + "/translate", body)["translatedText"]
            bleu = sacrebleu.corpus_bleu(outputs[source], [english])
            print(f"source {source}: BLEU {bleu.score:.2f} ({len(german)} lines)", flush=True)
        differ = sum(a != b for a, b in zip(outputs["auto"], outputs["de"], strict=True))
        print(f"lines that differ between auto and de: {differ}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


if __name__ == "__main__":
    main()

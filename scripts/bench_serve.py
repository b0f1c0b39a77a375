"""`nmt serve` under load: N concurrent clients, each sending single sentences, with
dynamic batching on and off, and OpenNMT-py 3.5.1's own server, in one run.

    python scripts/bench_serve.py RUN [--onmt-model M.pt --peers DIR]
        [--clients 1 8 32 128] [--requests 4] [--beam 5]
    python scripts/bench_serve.py RUN --fairness [--long-lines 5000] [--beam 5]

Each client sends --requests single test_2016_flickr sentences one after another
(a new sentence each time), so a level of N clients makes N * --requests requests.
Per server and level: sentences/s (answered requests over the level's wall time),
p50 and p99 latency, and how many requests were answered, told 503, or lost (no
HTTP answer within --timeout). Batching off is `--max-batch-lines 1`: every request its own
batch. OpenNMT-py's server (`onmt_server` from the peers' venv, never a dependency)
gets the same sentences in its SentencePiece pieces (it has no tokenizer of its own
here) with the same beam, through its `POST /translator/translate`.

--fairness: 16 clients send single test sentences one after another, first alone, then
while another client sends a request of --long-lines lines (Multi30k training lines);
their p50 and p99 with the long client against without it (target: p99 at most 2x), and
the long request's own time, alone and among the 16, against `nmt translate` of the same
lines (its wall time less that of `nmt translate` of one line: loading the model).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nmt.data import read_lines

ROOT = Path(__file__).resolve().parents[1]

MULTI30K = Path(os.environ.get("MULTI30K_DIR", ROOT.parent / "shared" / "data" / "multi30k"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:  # it answers: up
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def post(url: str, body, timeout: float) -> tuple[int, float]:
    """-> (HTTP status, or 0 for no answer within `timeout` seconds; seconds)."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except OSError:
        status = 0
    return status, time.perf_counter() - start


def load(url, make_body, sentences: list[str], clients: int, requests: int, timeout=60.0):
    def client(c: int) -> list[tuple[int, float]]:
        picks = [sentences[(c * requests + i) % len(sentences)] for i in range(requests)]
        return [post(url, make_body(s), timeout) for s in picks]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    ok = sorted(seconds for status, seconds in results if status == 200)

    def quantile(q: float) -> float:  # milliseconds
        return ok[min(len(ok) - 1, int(q * len(ok)))] * 1000 if ok else float("nan")

    return {
        "sent_per_s": len(ok) / wall,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "answered": len(ok),
        "busy": sum(status == 503 for status, _ in results),
        "lost": sum(status == 0 for status, _ in results),
        "other": sum(status not in (0, 200, 503) for status, _ in results),
    }


def nmt_server(run: str, beam: int, extra: list[str]):
    port = free_port()
    command = [sys.executable, "-m", "nmt", "-q", "serve", run, "--port", str(port), *extra]
    process = subprocess.Popen(
        command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health", process)

    def body(sentence: str) -> dict:
        return {"text": sentence, "source": "de", "target": "en", "beam": beam}

    return process, url + "/v1/translate", body


def onmt_server(model: Path, peers: Path, beam: int, tmp: Path):
    port = free_port()
    config = {
        "models_root": str(model.parent),
        "models": [
            {
                "id": 0,
                "model": model.name,
                "timeout": -1,
                "on_timeout": "unload",
                "load": True,
                "opt": {"beam_size": beam, "batch_size": 64, "gpu": -1, "max_length": 100},
            }
        ],
    }
    (tmp / "onmt.json").write_text(json.dumps(config))
    binary = peers / "opennmt" / "venv" / "bin" / "onmt_server"
    command = [str(binary), "--ip", "127.0.0.1", "--port", str(port), "--url_root", "/translator"]
    command += ["--model_config", str(tmp / "onmt.json")]
    # the peers' launcher's environment: 2 threads, and torch.load as OpenNMT-py 3.5.1 needs
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # its checkpoints pickle their options
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    process = subprocess.Popen(command, env=env, **quiet)
    url = f"http://127.0.0.1:{port}/translator"
    wait_for(url + "/models", process)
    return process, url + "/translate", lambda sentence: [{"src": sentence, "id": 0}]


def fairness(args) -> None:
    sentences = read_lines(MULTI30K / "test_2016_flickr.de.gz")
    long_lines = read_lines(MULTI30K / "train.de.gz")[: args.long_lines]
    extra = ["--max-batch-lines", str(args.max_batch_lines)] if args.max_batch_lines else []
    process, url, body = nmt_server(args.run, args.beam, extra)
    clients = 16
    try:
        load(url, body, sentences, 4, 4)  # warm-up
        alone = load(url, body, sentences, clients, args.requests * 4, args.timeout)
        print("16 clients alone", json.dumps(alone), flush=True)
        _, long_alone = post(url, {**body(""), "text": long_lines}, 3600)
        print(f"long request alone: {long_alone:.1f} s", flush=True)
        with ThreadPoolExecutor(1 + clients) as pool:
            long_run = pool.submit(post, url, {**body(""), "text": long_lines}, 3600)
            time.sleep(1.0)  # the long request is in

            def client(c: int) -> list[tuple[int, float]]:  # one after another, until it ends
                found = []
                while not long_run.done():
                    found.append(post(url, body(sentences[(c * 97 + len(found)) % 1000]), 60))
                return found

            beside = [r for rs in pool.map(client, range(clients)) for r in rs]
            long_status, long_beside = long_run.result()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    latencies = sorted(seconds for status, seconds in beside if status == 200)
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
    cli = translate_cli(args.run, args.beam, long_lines) if args.cli else float("nan")
    print(
        f"\nbeam {args.beam}; 16 single-sentence clients; a long request of {len(long_lines)} lines"
    )
    print("| | p50 ms | p99 ms | answered |")
    row = f"{alone['p50_ms']:.0f} | {alone['p99_ms']:.0f} | {alone['answered']}"
    print(f"| 16 clients alone | {row} |")
    print(f"| beside the long request | {p50:.0f} | {p99:.0f} | {len(latencies)} |")
    print(f"p99 beside / alone: {p99 / alone['p99_ms']:.2f}x (target <= 2x)")
    print(f"long request (status {long_status}): {long_alone:.1f} s alone, {long_beside:.1f} s "
          f"beside the 16; nmt translate of the same lines: {cli:.1f} s "
          f"(server alone / nmt translate: {long_alone / cli:.2f}x)")  # fmt: skip


def translate_cli(run: str, beam: int, lines: list[str]) -> float:
    """Seconds `nmt translate` takes for `lines`, less its time for one line."""

    def timed(some: list[str]) -> float:
        with tempfile.NamedTemporaryFile("w", suffix=".de") as f:
            f.write("".join(line + "\n" for line in some))
            f.flush()
            command = [sys.executable, "-m", "nmt", "-q", "translate", run, "-i", f.name]
            start = time.perf_counter()
            subprocess.run([*command, "--beam", str(beam)], check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - start

    return timed(lines) - timed(lines[:1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--onmt-model", type=Path)
    parser.add_argument("--peers", type=Path, default=Path.home() / "nmt-peers")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--requests", type=int, default=4, help="per client")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0, help="a request's, in seconds")
    parser.add_argument("--fairness", action="store_true", help="the fairness level only")
    parser.add_argument("--long-lines", type=int, default=5000)
    parser.add_argument("--max-batch-lines", type=int, help="the server's (default: its own)")
    parser.add_argument("--no-cli", dest="cli", action="store_false", help="skip nmt translate")
    args = parser.parse_args()
    if args.fairness:
        return fairness(args)
    sentences = read_lines(MULTI30K / "test_2016_flickr.de.gz")
    systems = {
        "nmt, batching on": lambda tmp: nmt_server(args.run, args.beam, []),
        "nmt, batching off": lambda tmp: nmt_server(
            args.run, args.beam, ["--max-batch-lines", "1"]
        ),
    }
    texts = {"nmt, batching on": sentences, "nmt, batching off": sentences}
    if args.onmt_model:
        systems["OpenNMT-py server"] = lambda tmp: onmt_server(
            args.onmt_model, args.peers, args.beam, tmp
        )
        pieces = args.peers / "data" / "sp" / "test.de"
        texts["OpenNMT-py server"] = pieces.read_text(encoding="utf-8").splitlines()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, start in systems.items():
            process, url, body = start(Path(tmp))
            try:
                load(url, body, texts[name], 4, 4)  # warm-up
                for clients in args.clients:
                    load_args = (texts[name], clients, args.requests, args.timeout)
                    rows[name, clients] = load(url, body, *load_args)
                    print(name, clients, json.dumps(rows[name, clients]), flush=True)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=120)
    print(f"\nbeam {args.beam}, {args.requests} single-sentence requests per client")
    print("clients | server | sent/s | p50 ms | p99 ms | answered | 503 | lost | vs off | vs onmt")
    for clients in args.clients:
        for name in systems:
            row, off = rows[name, clients], rows["nmt, batching off", clients]
            onmt = rows.get(("OpenNMT-py server", clients))

            def versus(other, row=row) -> str:
                return f"{row['sent_per_s'] / other['sent_per_s']:.2f}" if other else ""

            print(
                f"{clients} | {name} | {row['sent_per_s']:.1f} | {row['p50_ms']:.0f} | "
                f"{row['p99_ms']:.0f} | {row['answered']} | {row['busy']} | {row['lost']} | "
                f"{versus(off)} | {versus(onmt)}"
            )


if __name__ == "__main__":
    main()

"""This checkout's speed against another commit's, side by side in one run.

    python scripts/bench_ab.py --baseline 2ba44ec --run RUN [--onmt-model M.pt]
        [--rounds 3] [--train-steps 40] [--skip-train] [--skip-translate]
        [--configs demo peers] [--beams 5 1] [--precisions fp32 int8] [--repeats 1]

The baseline is checked out into a temporary git worktree. Every measurement runs in
a fresh process of one tree or the other (PYTHONPATH picks the tree), the trees
taking turns round by round, so a slow spell of the shared machine hits both:

- training: each tree's `scripts/bench_train.py --worker fp32` on the demo
  configuration and on the peers' (`bench_vs_peers.PEER_MODEL`), target tokens/s;
- translation: each tree's `Translator` over RUN on test_2016_flickr, beam 5 and
  greedy, fp32 and int8, sentences/s, model loading excluded (as bench_translate.py
  times it), the fastest of --repeats passes in that process; with --onmt-model,
  OpenNMT-py 3.5.1 on the same sentences in the same rounds (`bench_translate.bench_onmt`).

It prints each round's figures, then per row the median of the per-round ratios
(this checkout / baseline, and against OpenNMT-py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_translate import BATCH_SENTS, MULTI30K, bench_onmt  # this folder is on sys.path
from bench_vs_peers import PEER_MODEL

from nmt.data import read_lines

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = [("demo", []), ("peers", PEER_MODEL)]  # overrides of the demo config
TRANSLATE = """
import json, sys, time, torch
from pathlib import Path
from nmt.data import read_lines
from nmt.translate import Translator
torch.set_num_threads(2)
run, src, precision, beam, batch_sents, repeats = sys.argv[1:7]
lines = read_lines(Path(src))
translator = Translator.load(run, precision=precision)
mean_len = sum(len(x) for x in translator.encode(lines)) / len(lines)
options = {"beam": int(beam), "alpha": 0.0, "max_tokens": int(int(batch_sents) * mean_len)}
translator.translate(lines[:100], **options)  # warm-up
seconds = []
for _ in range(int(repeats)):
    start = time.perf_counter()
    hyps = translator.translate(lines, **options)
    seconds.append(time.perf_counter() - start)
seconds = min(seconds)  # the shared machine's noise only ever adds time
print(json.dumps({"sent_per_s": len(lines) / seconds, "text": [h[0].text for h in hyps]}))
"""


def in_tree(tree: Path, args: list[str]) -> dict:
    """`python ARGS` with `tree` first on the import path -> its last line, as JSON."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{tree}: {' '.join(args[:2])} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_rate(tree: Path, overrides: list[str], steps: int) -> float:
    """Target tokens/s of `tree`'s own bench_train.py worker, fp32."""
    script = ["scripts/bench_train.py", "configs/multi30k_de_en.yaml", *overrides]
    worker = ["--worker", "fp32", "--steps", str(steps), "--warmup", "10"]
    return in_tree(tree, [*script, *worker])["tok_per_s"]


def median_ratio(ours: list[float], theirs: list[float]) -> str:
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return f"{statistics.median(ratios):.3f} (" + ", ".join(f"{r:.2f}" for r in ratios) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a commit of this repository")
    parser.add_argument("--run", help="a run directory or checkpoint to translate with")
    parser.add_argument("--onmt-model", help="an OpenNMT-py checkpoint of the same size")
    parser.add_argument("--peers", default=os.environ.get("PEERS", str(Path.home() / "nmt-peers")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-translate", action="store_true")
    parser.add_argument("--configs", nargs="+", default=[name for name, _ in TRAIN_CONFIGS])
    parser.add_argument("--beams", type=int, nargs="+", default=[5, 1])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--repeats", type=int, default=1, help="translation passes per process")
    parser.add_argument(
        "--multi30k", type=Path, default=Path(os.environ.get("MULTI30K_DIR", MULTI30K))
    )
    args = parser.parse_args()
    multi30k = args.multi30k.resolve()  # the trees run in their own folders
    data = [f"data.train={multi30k / 'train'}", f"data.valid={multi30k / 'val'}"]
    src, ref = multi30k / "test_2016_flickr.de.gz", multi30k / "test_2016_flickr.en.gz"
    rows: dict[str, dict[str, list[float]]] = {}  # row -> system -> one figure per round

    def record(row: str, system: str, value: float) -> None:
        rows.setdefault(row, {}).setdefault(system, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        worktree = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*worktree, "add", "--detach", str(base), args.baseline], check=True)
        try:
            trees = [("this", ROOT), ("base", base)]
            for r in range(args.rounds):
                order = trees if r % 2 == 0 else trees[::-1]
                configs = [c for c in TRAIN_CONFIGS if c[0] in args.configs]
                for config, overrides in () if args.skip_train else configs:
                    for name, tree in order:
                        rate = train_rate(tree, [*overrides, *data], args.train_steps)
                        record(f"train {config} fp32 tok/s", name, rate)
                for beam in () if args.skip_translate or not args.run else args.beams:
                    if args.onmt_model:
                        onmt = (Path(args.onmt_model), Path(args.peers), read_lines(ref))
                        peer = bench_onmt(*onmt, beam, BATCH_SENTS, 0.0)
                        record(f"beam {beam} OpenNMT-py sent/s", "onmt", peer["sent_per_s"])
                    for precision in args.precisions:
                        texts = []
                        for name, tree in order:
                            run = str(Path(args.run).resolve())
                            worker = [run, str(src), precision, str(beam), str(BATCH_SENTS)]
                            worker.append(str(args.repeats))
                            result = in_tree(tree, ["-c", TRANSLATE, *worker])
                            texts.append(result["text"])
                            record(f"beam {beam} {precision} sent/s", name, result["sent_per_s"])
                        same = sum(a == b for a, b in zip(*texts, strict=True))
                        print(f"round {r + 1}, beam {beam} {precision}: {same} lines identical")
                print(f"round {r + 1}: {json.dumps(rows)}", flush=True)
        finally:
            subprocess.run([*worktree, "remove", "--force", str(base)], check=True)
    print(f"\n{args.rounds} rounds, this checkout against {args.baseline} (base): medians;")
    print("ratios: the median of the per-round ratios")
    for row, by_system in rows.items():
        line = f"{row:<26} " + "  ".join(
            f"{name} {statistics.median(values):,.1f}" for name, values in by_system.items()
        )
        if "base" in by_system:
            line += f"  this/base {median_ratio(by_system['this'], by_system['base'])}"
        peer = rows.get(row.replace("fp32", "OpenNMT-py").replace("int8", "OpenNMT-py"))
        if peer and "this" in by_system:
            line += f"  this/OpenNMT-py {median_ratio(by_system['this'], peer['onmt'])}"
            line += f"  base/OpenNMT-py {median_ratio(by_system['base'], peer['onmt'])}"
        print(line)


if __name__ == "__main__":
    main()

"""Training speed against OpenNMT-py 3.5.1 and JoeyNMT 2.3.0, one model size, one run.

    python scripts/bench_vs_peers.py [--onmt-seconds 300] [--joey-seconds 480] [--steps 200]
        [--bleu-seconds 900 [--seeds 1234 4321 1]]

The model of ../shared/peers (emb 256, bi-LSTM 1x256 per direction, decoder
1x512, Luong general attention, input feeding, dropout 0.3, untied embeddings,
no label smoothing, loss per sentence, Adam 1e-3, clip 5, fp32, 2 threads, ~2000
target tokens per batch) on Multi30k de-en, trained one after the other on this machine:

- the peers through the harness's own scripts (`run_opennmt.sh train`,
  `run_joeynmt.sh train`, each in its scratch venv under $PEERS, never a
  dependency of nmt) for a wall-clock budget; target tokens/s over a window of
  steps and peak RSS read by the harness's `summarize.py` and `/usr/bin/time -v`.
- nmt through `scripts/bench_train.py --worker fp32`, with input feeding and
  without it (`model.input_feed=false`: the decoder LSTM runs over the whole
  target in one call). Its SentencePiece model is its own, trained with the
  peers' recipe (unigram, 8k, joint, full character coverage) on the same text;
  the table gives target tokens (pieces + EOS) per sentence for OpenNMT and nmt,
  so the per-token rates compare like with like.

With --bleu-seconds S it then trains nmt (input feeding, constant learning rate
as the peers' config; one run per --seeds seed) for S seconds of training and
OpenNMT-py for the longest of their wall
clock from process start to its last step (S plus nmt's own set-up: reading the
text, SentencePiece, tokenizing; OpenNMT-py reads the harness's pre-encoded
pieces), and scores each one's final weights on test_2016_flickr at beam 5
without length penalty, with the same sacrebleu call: BLEU after equal time.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_train import run_worker  # this folder is on sys.path when run as a script
from bench_translate import BATCH_SENTS, onmt_translate

from nmt.data import read_lines
from nmt.reporting.evaluation import make_metrics

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "peers"
CONFIG = ROOT / "configs" / "multi30k_de_en.yaml"
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
TEST = "test_2016_flickr"
# the peers' configuration, in nmt's terms
PEER_MODEL = [
    "model.tie_embeddings=false",
    "model.bridge=copy",
    "model.dropout=0.3",
    "train.label_smoothing=0.0",
    # OpenNMT-py's loss: summed over tokens, divided by sentences (normalization: sents),
    # so its clip at 5 binds; nmt's default per-token mean would leave it idle
    "train.loss_normalization=sentences",
    "train.precision=fp32",
    "train.threads=2",
    "data.max_tokens=2200",  # OpenNMT's batch_size: padded tokens of the longer side
]


def harness_summary():
    spec = importlib.util.spec_from_file_location("summarize", HARNESS / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_peer(peer: str, seconds: int, peers: Path) -> Path:
    run = peers / peer / "bench"
    env = {**os.environ, "PEERS": str(peers), "BUDGET": str(seconds), "RUN": str(run)}
    script = HARNESS / f"run_{peer}.sh"
    subprocess.run(["bash", str(script), "train"], env=env, check=True, capture_output=True)
    return run


def opennmt(seconds: int, peers: Path, summarize) -> dict:
    run = run_peer("opennmt", seconds, peers)
    steps = summarize.onmt_train(str(run), 50, 100)["final_step"] // 50 * 50
    stats = summarize.onmt_train(str(run), 100, min(steps, 400))
    rss = summarize.time_v(str(run / "train.time"))["max_rss_kb"]
    return {
        "system": "OpenNMT-py 3.5.1",
        "tok_per_s": stats["train_tgt_tok_per_s"],
        "window": f"steps {stats['window_steps'][0]}-{stats['window_steps'][1]}",
        "tok_per_step": stats["mean_tgt_tokens_per_batch"],
        "pieces_per_sent": stats["mean_tgt_tokens_per_batch"] / stats["mean_sents_per_batch"],
        "peak_rss_gib": rss / 2**20,
    }


def joeynmt(seconds: int, peers: Path, summarize) -> dict:
    run = run_peer("joeynmt", seconds, peers)
    lines = (run / "train.log").read_text(encoding="utf-8").splitlines()
    last = max(int(m["step"]) for line in lines if (m := summarize.JOEY_STEP.match(line)))
    if last <= 50:  # the window needs two logged steps (every 50)
        raise RuntimeError(f"JoeyNMT logged only step {last} in {seconds} s: raise --joey-seconds")
    stats = summarize.joey_train(str(run), 50, last)
    rss = summarize.time_v(str(run.parent / f"{run.name}.train.time"))["max_rss_kb"]
    return {
        "system": "JoeyNMT 2.3.0",
        "tok_per_s": stats["train_tgt_tok_per_s"],
        "window": f"steps 50-{last}",
        "tok_per_step": stats["mean_tgt_tokens_per_batch"] or 0,
        "pieces_per_sent": None,
        "peak_rss_gib": rss / 2**20,
    }


def ours(name: str, overrides: list[str], steps: int) -> dict:
    result = run_worker(CONFIG, [*PEER_MODEL, *overrides], "fp32", steps, warmup=20)
    return {
        "system": name,
        "tok_per_s": result["tok_per_s"],
        "window": f"steps 20-{20 + steps}",
        "tok_per_step": result["tokens_per_step"],
        "pieces_per_sent": result["tgt_tokens_per_sentence"],
        "peak_rss_gib": result["peak_rss_gib"],
        "mflop_per_token": result["mflop_per_token"],
    }


def data_overrides(multi30k: Path) -> list[str]:
    """Absolute data paths: the config's relative ones depend on the working folder."""
    return [f"data.train={multi30k / 'train'}", f"data.valid={multi30k / 'val'}"]


def nmt_after(seconds: int, out: Path, multi30k: Path, refs: list[str], seed: int) -> dict:
    """nmt trained for `seconds` of its training loop; -> test BLEU and the wall clock
    from process start to the loop's end."""
    train = [
        *PEER_MODEL,
        f"train.seed={seed}",
        "train.schedule=constant",
        f"train.max_time={seconds}",
        "train.valid_every=1000000",  # only the one validation when the budget ends
        *data_overrides(multi30k),
    ]
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
    started, log = time.time(), out.with_suffix(".log")
    nmt = [sys.executable, "-m", "nmt"]
    with open(log, "w") as stderr:
        cmd = [*nmt, "train", str(CONFIG), "--out", str(out), *train]
        subprocess.run(cmd, stderr=stderr, check=True)
    # the loop starts right after the "device=..." line, logged as local HH:MM:SS
    clock = re.search(r"^(\d\d:\d\d:\d\d) INFO nmt.training.train: device=", log.read_text(), re.M)
    begun = datetime.datetime.fromtimestamp(started)
    loop_start = datetime.datetime.combine(begun, datetime.time.fromisoformat(clock[1]))
    setup = (loop_start - begun.replace(microsecond=0)).seconds  # .seconds: wraps past midnight
    hyp = out / "test.b5.en"
    source = multi30k / f"{TEST}.de.gz"
    decode = ["--beam", "5", "--alpha", "0"]
    subprocess.run(
        [*nmt, "-q", "translate", str(out), "-i", str(source), "-o", str(hyp), *decode], check=True
    )
    metrics = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    valid = [r for r in metrics if r["event"] == "valid"]
    return {
        "system": f"nmt, input feeding, seed {seed}",
        "wall_to_last_step": round(setup + seconds),
        "steps": valid[-1]["step"],
        **score(hyp, refs),
    }


def opennmt_after(wall: int, peers: Path, refs: list[str]) -> dict:
    """OpenNMT-py trained for `wall` seconds from process start (the harness's
    `run_opennmt.sh train`), its final weights decoded at beam 5 without length
    penalty (the harness's own decode would use OpenNMT-py's default,
    log-probability / length)."""
    # its own folder: the harness deletes a folder's checkpoints before training, and
    # opennmt/bleu holds the model that bench_translate's documented runs decode
    run = peers / "opennmt" / "bleu_after"
    env = {**os.environ, "PEERS": str(peers), "BUDGET": str(wall), "RUN": str(run)}
    script = HARNESS / "run_opennmt.sh"
    subprocess.run(["bash", str(script), "train"], env=env, check=True, capture_output=True)
    # the checkpoint written when the budget stopped it: the highest step saved
    saved = {int(p.stem.rsplit("_", 1)[1]): p for p in run.glob("model_step_*.pt")}
    if not saved:
        raise SystemExit(f"OpenNMT-py saved no checkpoint in {run}: see its train.log")
    steps = max(saved)
    model, src = saved[steps], peers / "data" / "sp" / "test.de"
    options = {"beam": 5, "batch_sents": BATCH_SENTS, "alpha": 0.0}
    texts, _ = onmt_translate(model, peers, src, run / "hyp.b5.nolp.sp", **options)
    hyp = run / "hyp.b5.nolp.en"
    hyp.write_text("".join(line + "\n" for line in texts), encoding="utf-8")
    return {
        "system": "OpenNMT-py 3.5.1",
        "wall_to_last_step": wall,
        "steps": steps,
        **score(hyp, refs),
    }


def score(hyp: Path, refs: list[str]) -> dict:
    # the report's metric objects, without evaluate()'s per-sentence BLEU of every line
    metrics, hyps = make_metrics(["bleu", "chrf"], chrf_plus=False), read_lines(hyp)
    scores = {name: m.corpus_score(hyps, [refs]).score for name, m in metrics.items()}
    return {
        "bleu": round(scores["bleu"], 2),
        "chrf": round(scores["chrf"], 2),
        "signature": str(metrics["bleu"].get_signature()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onmt-seconds", type=int, default=300)
    parser.add_argument("--joey-seconds", type=int, default=480)
    parser.add_argument("--steps", type=int, default=200, help="nmt's timed steps")
    parser.add_argument("--peers", default=os.environ.get("PEERS", str(Path.home() / "nmt-peers")))
    parser.add_argument("--skip-joey", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="only the BLEU comparison")
    parser.add_argument(
        "--bleu-seconds", type=int, default=0, help="BLEU after this much training; 0: skip"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1234],
        help="nmt's seeds for --bleu-seconds, one run each (OpenNMT-py's is its config's)",
    )
    parser.add_argument(
        "--multi30k", type=Path, default=Path(os.environ.get("MULTI30K_DIR", MULTI30K))
    )  # absolute: the data paths must not depend on the folder this runs from
    args = parser.parse_args()
    args.multi30k = args.multi30k.resolve()
    if not args.skip_speed:
        speed(args)
    if args.bleu_seconds:
        bleu_after(args)


def bleu_after(args) -> None:
    peers = Path(args.peers)
    runs = peers / "nmt"  # one run folder per seed
    runs.mkdir(parents=True, exist_ok=True)
    refs = read_lines(args.multi30k / f"{TEST}.en.gz")
    ours = [
        nmt_after(args.bleu_seconds, runs / f"bleu_seed{seed}", args.multi30k, refs, seed)
        for seed in args.seeds
    ]
    wall = max(r["wall_to_last_step"] for r in ours)
    rows = [opennmt_after(wall, peers, refs), *ours]
    print(f"\nBLEU after equal time: {args.bleu_seconds} s of nmt training; each system's")
    print("wall clock from process start to its last step; test_2016_flickr, beam 5, no")
    print(f"length penalty, final weights. {rows[0]['signature']}")
    print(" | ".join(["system", "wall s", "steps", "BLEU", "chrF2"]))
    for r in rows:
        cells = [r["system"], str(r["wall_to_last_step"]), f"{r['steps']:,}"]
        print(" | ".join([*cells, f"{r['bleu']:.2f}", f"{r['chrf']:.2f}"]))


def speed(args) -> None:
    peers, summarize = Path(args.peers), harness_summary()

    rows = [opennmt(args.onmt_seconds, peers, summarize)]
    if not args.skip_joey:
        rows.append(joeynmt(args.joey_seconds, peers, summarize))
    fastest_peer = max(r["tok_per_s"] for r in rows)
    data = data_overrides(args.multi30k)
    rows.append(ours("nmt, input feeding", data, args.steps))
    rows.append(ours("nmt, no input feeding", [*data, "model.input_feed=false"], args.steps))

    print("Same model, data recipe and machine; fp32, 2 threads; target tokens/s")
    header = ["system", "tok/s", "vs faster peer", "window", "tgt tok/step", "tgt tok/sent"]
    print(" | ".join(header + ["peak RSS GiB"]))
    for r in rows:
        pieces = f"{r['pieces_per_sent']:.1f}" if r["pieces_per_sent"] else "-"
        cells = [r["system"], f"{r['tok_per_s']:,.0f}", f"{r['tok_per_s'] / fastest_peer:.2f}"]
        cells += [r["window"], f"{r['tok_per_step']:,.0f}", pieces, f"{r['peak_rss_gib']:.2f}"]
        print(" | ".join(cells))


if __name__ == "__main__":
    main()

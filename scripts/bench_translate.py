"""Translation speed (sentences/s, target tokens/s) and BLEU, beam 5 and greedy,
optionally against OpenNMT-py on the same sentences in the same run.

    python scripts/bench_translate.py runs/demo [--src S.de.gz --ref R.en.gz]
        [--batch-sents 64] [--onmt-model MODEL.pt --peers DIR]

With --rounds R the systems take turns R times and the table gives medians
(the ratio column: the median of the per-round ratios). With --graphs (a CUDA
device) each precision also runs with its decoder step replayed as CUDA graphs
(`nmt.runtime.graphs`), eager and captured in the same run; every system then
warms up on the whole file, so that the captured ones time replays, not captures.

Ours: `Translator.translate` on the whole file after the model is loaded and
warmed up, batches of about --batch-sents sentences (a token budget of that
many average-length sentences). OpenNMT-py: `onmt_translate` from the peer
harness's venv (../shared/peers, never a dependency of this project) on the
same sentences in its SentencePiece pieces, with the same length penalty
(--alpha; OpenNMT-py's own default would be log-probability / length), timed
as the peers README does:
the wall time of the whole file minus that of a one-sentence file, so model
loading and start-up cancel out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm
import torch

from nmt.data import read_lines
from nmt.options import PRECISIONS
from nmt.training.validation import bleu
from nmt.translate import Translator

MULTI30K = Path(os.environ.get("MULTI30K_DIR", "../shared/data/multi30k"))
HARNESS = Path("../shared/peers")
BATCH_SENTS = 64  # sentences per translation batch, for both systems


def bench_ours(
    translator: Translator,
    lines: list[str],
    refs: list[str],
    beam: int,
    batch_sents: int,
    alpha: float,
    warmup: list[str],
):
    mean_len = sum(len(x) for x in translator.encode(lines)) / len(lines)
    max_tokens = int(batch_sents * mean_len)
    options = {"beam": beam, "alpha": alpha, "max_tokens": max_tokens}
    translator.translate(warmup, **options)
    start = time.perf_counter()
    hyps = [h[0] for h in translator.translate(lines, **options)]
    seconds = time.perf_counter() - start
    tokens = sum(len(h.tokens) + 1 for h in hyps)
    score, _ = bleu([h.text for h in hyps], refs)
    return {"sent_per_s": len(lines) / seconds, "tok_per_s": tokens / seconds, "bleu": score}


def onmt_translate(
    model: Path, peers: Path, src: Path, out: Path, *, beam: int, batch_sents: int, alpha: float
) -> tuple[list[str], float]:
    """OpenNMT-py's `onmt_translate` on a file of pieces -> detokenized outputs and
    the command's wall time (detokenizing excluded).

    OpenNMT-py's own default ranks by log-probability / length ("avg"): it is
    asked for ours instead, raw log-probability (alpha 0) or GNMT's penalty.
    """
    penalty = "none" if alpha == 0 else "wu"
    launch = HARNESS / "launch.py"  # the peers' uniform launcher: 2 threads, fp32
    command = [
        *(str(peers / "opennmt" / "venv" / "bin" / "python"), str(launch), "onmt-translate"),
        *("-model", str(model), "-src", str(src), "-output", str(out)),
        *("-beam_size", str(beam), "-batch_size", str(batch_sents), "-batch_type", "sents"),
        *("-max_length", "100", "-gpu", "-1", "-length_penalty", penalty, "-alpha", str(alpha)),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    sp = spm.SentencePieceProcessor(model_file=str(peers / "data" / "spm8k.model"))
    pieces = out.read_text(encoding="utf-8").splitlines()
    return [sp.decode_pieces(line.split()) for line in pieces], seconds


def bench_onmt(
    model: Path, peers: Path, refs: list[str], beam: int, batch_sents: int, alpha: float
):
    src = peers / "data" / "sp" / "test.de"
    options = {"beam": beam, "batch_sents": batch_sents, "alpha": alpha}
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.de"
        one.write_text(src.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        _, one_wall = onmt_translate(model, peers, one, Path(tmp) / "one.hyp", **options)
        full = Path(tmp) / "full.hyp"
        texts, full_wall = onmt_translate(model, peers, src, full, **options)
        tokens = sum(len(line.split()) + 1 for line in full.open(encoding="utf-8"))
    seconds = full_wall - one_wall
    score, _ = bleu(texts, refs)
    return {"sent_per_s": len(texts) / seconds, "tok_per_s": tokens / seconds, "bleu": score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run directory or checkpoint")
    parser.add_argument("--src", default=str(MULTI30K / "test_2016_flickr.de.gz"))
    parser.add_argument("--ref", default=str(MULTI30K / "test_2016_flickr.en.gz"))
    parser.add_argument("--batch-sents", type=int, default=BATCH_SENTS)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--beams", type=int, nargs="+", default=[5, 1])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "int8"],
        choices=PRECISIONS,
        help="auto: what `nmt translate` runs with no --precision; ratios against the first",
    )
    parser.add_argument(
        "--alpha", type=float, default=0.0, help="length penalty (OpenNMT-py's default: none)"
    )
    parser.add_argument(
        "--graphs", action="store_true", help="also each precision with CUDA graphs (cuda only)"
    )
    parser.add_argument("--onmt-model", help="an OpenNMT-py checkpoint of the same size")
    parser.add_argument("--peers", default=os.environ.get("PEERS", str(Path.home() / "nmt-peers")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines, refs = read_lines(Path(args.src)), read_lines(Path(args.ref))
    translators = {
        p + ("+graphs" if graphs else ""): Translator.load(
            args.model, device=args.device, precision=p, graphs=graphs
        )
        for p in args.precisions
        for graphs in ([False, True] if args.graphs else [False])
    }
    warmup = lines if args.graphs else lines[:100]

    print(
        f"{len(lines)} sentences on {args.device}, {args.threads} threads, "
        f"batches of ~{args.batch_sents} "
        f"sentences, length penalty {args.alpha}, model load excluded"
    )
    for name, translator in translators.items():
        print(f"{name}: runs in {translator.plan.precision}")
    first = f"nmt ({next(iter(translators))})"
    header = f"{'system':<22} {'beam':>4} {'sent/s':>8} {'tok/s':>8} {'BLEU':>6} {'vs OpenNMT':>10}"
    print(header + f" {'vs ' + first:>14}")
    for beam in args.beams:
        # rounds alternate the systems, so a slow spell of the shared machine hits all of them
        runs: dict[str, list[dict]] = {}
        for _ in range(args.rounds):
            if args.onmt_model:
                peer = bench_onmt(
                    Path(args.onmt_model),
                    Path(args.peers),
                    refs,
                    beam,
                    args.batch_sents,
                    args.alpha,
                )
                runs.setdefault("OpenNMT-py 3.5.1", []).append(peer)
            for precision, translator in translators.items():
                ours = bench_ours(
                    translator, lines, refs, beam, args.batch_sents, args.alpha, warmup
                )
                runs.setdefault(f"nmt ({precision})", []).append(ours)
        peer_runs = runs.get("OpenNMT-py 3.5.1")
        for system, results in runs.items():
            rate = statistics.median(r["sent_per_s"] for r in results)
            tokens = statistics.median(r["tok_per_s"] for r in results)
            ratio = "-"
            if peer_runs:  # the median of the per-round ratios
                pairs = zip(results, peer_runs, strict=True)
                per_round = [ours["sent_per_s"] / peer["sent_per_s"] for ours, peer in pairs]
                ratio = f"{statistics.median(per_round):.2f}"
            pairs = zip(results, runs[first], strict=True)
            to_first = statistics.median(r["sent_per_s"] / f["sent_per_s"] for r, f in pairs)
            print(
                f"{system:<22} {beam:>4} {rate:>8.1f} {tokens:>8.0f} "
                f"{results[0]['bleu']:>6.2f} {ratio:>10} {to_first:>14.3f}"
            )
            if args.rounds > 1:
                print(f"{'':<22} rounds: " + ", ".join(f"{r['sent_per_s']:.1f}" for r in results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

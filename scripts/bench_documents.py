"""Whole-line translation (`nmt.text.documents`) with sentence splitting on and off, side by
side in one run: speed, words out, and BLEU where the lines are single sentences.

    python scripts/bench_documents.py RUN [--rounds 3] [--beam 5] [--join 10]

Two inputs from test_2016_flickr: the file as it is (one sentence a line) and its
sentences joined --join to a line. Each round translates both inputs with splitting
on and off, in alternating order; the table gives medians of the rounds, and the
ratio column the median of the per-round ratios of words out per second (on / off:
on one-sentence lines the words are the same, on joined lines splitting translates
more of them). Model loading and a warm-up pass are excluded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from nmt.data import read_lines
from nmt.text.documents import Summary, translate_lines
from nmt.training.validation import bleu
from nmt.translate import Translator

MULTI30K = Path(os.environ.get("MULTI30K_DIR", "../shared/data/multi30k"))


def run(translator: Translator, lines: list[str], split: bool, beam: int) -> dict:
    summary = Summary()
    start = time.perf_counter()
    hyps = translate_lines(translator, lines, split=split, beam=beam, summary=summary)
    out = [h[0].text for h in hyps]
    seconds = time.perf_counter() - start
    words = sum(len(line.split()) for line in out)
    return {"seconds": seconds, "words": words, "out": out, "summary": str(summary)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--join", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    translator = Translator.load(args.run)
    src = read_lines(MULTI30K / "test_2016_flickr.de.gz")
    refs = read_lines(MULTI30K / "test_2016_flickr.en.gz")
    joined = [" ".join(src[i : i + args.join]) for i in range(0, len(src), args.join)]
    inputs = {"one sentence a line": src, f"{args.join} sentences a line": joined}
    run(translator, src[:100], True, args.beam)  # warm-up
    results: dict[tuple[str, bool], list[dict]] = {}
    for r in range(args.rounds):
        for name, lines in inputs.items():
            for split in (True, False) if r % 2 == 0 else (False, True):
                results.setdefault((name, split), []).append(
                    run(translator, lines, split, args.beam)
                )
    print(
        f"{translator.device}, {torch.get_num_threads()} threads, beam {args.beam}, "
        f"{args.rounds} rounds"
    )
    print("input | split | lines/s | words out/s | words out | BLEU | on/off words out/s (rounds)")
    for name, lines in inputs.items():
        on, off = results[(name, True)], results[(name, False)]
        ratios = [  # words out per second, on / off
            (a["words"] / a["seconds"]) / (b["words"] / b["seconds"])
            for a, b in zip(on, off, strict=True)
        ]
        for split, rows in (("on", on), ("off", off)):
            seconds = statistics.median(row["seconds"] for row in rows)
            words = rows[0]["words"]
            score = bleu(rows[0]["out"], refs)[0] if lines is src else float("nan")
            ratio = (
                (f"{statistics.median(ratios):.3f} (" + ", ".join(f"{x:.2f}" for x in ratios) + ")")
                if split == "on"
                else ""
            )
            print(
                f"{name} | {split} | {len(lines) / seconds:.1f} | {words / seconds:.0f} | "
                f"{words} | {score:.2f} | {ratio}"
            )


if __name__ == "__main__":
    main()

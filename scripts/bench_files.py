"""A Word document against the same sentences as a text file, in one run: does reading
the .docx, placing its runs by the alignments and writing it back cost more than 10%?

    python scripts/bench_files.py RUN [--rounds 3] [--beam 5] [--sentences 1000]

The first --sentences German sentences of test_2016_flickr, one a paragraph of a .docx
made with python-docx (the second word of each bold, so every paragraph has runs to
place), and one a line of a .txt. Each round translates both files through
`nmt.text.formats.translate_file`, in alternating order; the table gives medians of the
rounds and the ratios the medians of the per-round ratios (docx / text), in wall-clock
seconds and in this process's CPU seconds (steadier where the machine is shared).
It also checks that each paragraph's text is its line's translation. Model loading and
a warm-up pass are excluded.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path

import docx
import torch

from nmt.data import read_lines
from nmt.text.formats import translate_file
from nmt.translate import Translator

MULTI30K = Path(os.environ.get("MULTI30K_DIR", "../shared/data/multi30k"))


def make_docx(sentences: list[str]) -> bytes:
    document = docx.Document()
    for sentence in sentences:
        first, _, rest = sentence.partition(" ")
        second, _, rest = rest.partition(" ")
        paragraph = document.add_paragraph(first + " ")
        paragraph.add_run(second).bold = True
        paragraph.add_run(" " + rest if rest else "")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def timed(translator: Translator, data: bytes, fmt: str, beam: int) -> tuple[tuple, bytes]:
    """(wall seconds, this process's CPU seconds), and the translated file."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = translate_file(translator, data, fmt, f"bench.{fmt}", beam=beam)
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    translator = Translator.load(args.run)
    sentences = read_lines(MULTI30K / "test_2016_flickr.de.gz")[: args.sentences]
    files = {"text": "".join(s + "\n" for s in sentences).encode(), "docx": make_docx(sentences)}
    timed(translator, files["text"][:5000], "text", args.beam)  # warm-up
    seconds: dict[str, list[tuple]] = {"text": [], "docx": []}
    outs = {}
    for r in range(args.rounds):
        for fmt in ("text", "docx") if r % 2 == 0 else ("docx", "text"):
            took, outs[fmt] = timed(translator, files[fmt], fmt, args.beam)
            seconds[fmt].append(took)
    lines = outs["text"].decode().splitlines()
    paragraphs = [p.text for p in docx.Document(io.BytesIO(outs["docx"])).paragraphs]
    same = sum(a == b for a, b in zip(lines, paragraphs, strict=True))
    print(f"{len(sentences)} sentences, beam {args.beam}, {args.rounds} rounds")
    print("| file | wall s (median) | CPU s (median) | sentences/s (wall) |")
    print("|---|---|---|---|")
    for fmt, took in seconds.items():
        wall, cpu = (statistics.median(t[k] for t in took) for k in (0, 1))
        print(f"| {fmt} | {wall:.2f} | {cpu:.2f} | {len(sentences) / wall:.1f} |")
    for k, clock in enumerate(("wall", "CPU")):  # CPU time: steadier on a shared machine
        ratios = [d[k] / t[k] for d, t in zip(seconds["docx"], seconds["text"], strict=True)]
        each = ", ".join(f"{x:.3f}" for x in ratios)
        print(f"docx / text, {clock} time: {statistics.median(ratios):.3f} (per round: {each})")
    print(f"paragraphs whose text is their line's translation: {same} of {len(lines)}")


if __name__ == "__main__":
    main()

"""Streaming data at scale: memory stays flat over millions of pairs, and a
streaming run resumes at the batch where it stopped.

    python scripts/bench_streaming.py [--pairs 2000000] [--dir /tmp/nmt-stream]

1. Writes a synthetic parallel corpus of --pairs lines (PREFIX.de / PREFIX.en,
   random sentences of 4-30 words over a 20,000-word vocabulary) unless it exists.
2. Drives the training pipeline over all of it (read, tokenize, clean, shuffle
   buffer, sort pool, token-budget batches) and prints the process's resident
   memory after 0.5M, 1M and 2M pairs, with the peak so far.
   Peak memory is counted from after SentencePiece training (200k pairs).
3. Trains a tiny model in streaming mode for 2N steps, and for N steps plus a
   resume to 2N, and prints whether their parameters are equal.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from nmt.config import Config
from nmt.corpus import training_corpus
from nmt.data import tokenizer_text
from nmt.tokenizer import build_tokenizers
from nmt.training.train import train

ROOT = Path(__file__).resolve().parents[1]


def write_corpus(prefix: Path, pairs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "ne", "su", "ma", "lo", "pe", "di", "gu", "ba", "xe"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(20_000)]
    with open(f"{prefix}.de", "w") as de, open(f"{prefix}.en", "w") as en:
        for _ in range(pairs):
            sentence = rng.choices(words, k=rng.randint(4, 30))
            de.write(" ".join(sentence) + "\n")
            en.write(" ".join(reversed(sentence)) + "\n")


def rss_mib() -> tuple[float, float]:
    """(current, peak since `reset_peak`) resident memory of this process in MiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def reset_peak() -> None:
    """Linux: restart the peak-RSS count (VmHWM), so SentencePiece training before the
    pipeline does not hide the pipeline's own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def drive_pipeline(cfg: Config, marks: list[int]) -> None:
    tokenizers = build_tokenizers(cfg.data, *tokenizer_text(cfg.data))  # the first spm_sample
    now, peak = rss_mib()
    print(f"after SentencePiece training: RSS {now:.0f} MiB, peak {peak:.0f} MiB; peak reset")
    reset_peak()
    corpus = training_corpus(cfg.data, tokenizers, seed=1)  # data.streaming: a stream
    print(f"{'pairs read':>12} {'batches':>9} {'RSS MiB':>8} {'peak MiB':>9} {'seconds':>8}")
    start, pairs, batches = time.perf_counter(), 0, 0
    pending = list(marks)
    for src, _ in corpus.batches(0):
        pairs += len(src)
        batches += 1
        # pairs handed out lag those read by the buffers: report by pairs handed out
        while pending and pairs >= pending[0]:
            now, peak = rss_mib()
            print(
                f"{pending.pop(0):>12,} {batches:>9,} {now:>8.0f} {peak:>9.0f} "
                f"{time.perf_counter() - start:>8.0f}"
            )
    now, peak = rss_mib()
    print(f"{pairs:>12,} {batches:>9,} {now:>8.0f} {peak:>9.0f} (all; cleaning: {corpus.counts})")


def check_resume(cfg_path: Path, prefix: Path, steps: int, work: Path) -> None:
    common = [
        f"data.train={prefix}",
        f"data.valid={prefix}-val",
        "data.streaming=true",
        "data.vocab_size=2000",
        "data.spm_sample=20000",
        "train.threads=2",
        f"train.valid_every={steps}",
    ]
    unbroken, resumed = work / "unbroken", work / "resumed"
    train(Config.from_yaml(cfg_path, [*common, f"train.max_steps={2 * steps}"]), unbroken)
    train(Config.from_yaml(cfg_path, [*common, f"train.max_steps={steps}"]), resumed)
    progress = train(None, resumed, resume=True, overrides=[f"train.max_steps={2 * steps}"])
    first = torch.load(unbroken / "last.pt", weights_only=True)["model"]
    second = torch.load(resumed / "last.pt", weights_only=True)["model"]
    equal = all(torch.equal(first[k], second[k]) for k in first)
    print(
        f"streaming run: {steps} steps, resumed to {progress.step} "
        f"(epoch {progress.epoch}, batch {progress.batch_in_epoch}); "
        f"parameters equal to an unbroken {2 * steps}-step run: {equal}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2_000_000)
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "nmt-stream"))
    parser.add_argument("--resume-steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    prefix = work / f"synthetic{args.pairs}"
    if not Path(f"{prefix}.en").exists():
        start = time.perf_counter()
        write_corpus(prefix, args.pairs)
        seconds = time.perf_counter() - start
        print(f"wrote {args.pairs:,} pairs to {prefix}.{{de,en}} in {seconds:.0f} s")
    write_corpus(Path(f"{prefix}-val"), 200, seed=1)

    cfg_path = ROOT / "configs" / "tiny.yaml"
    overrides = [f"data.train={prefix}", "data.streaming=true", "data.vocab_size=8000"]
    cfg = Config.from_yaml(cfg_path, [*overrides, "data.spm_sample=200000"])
    print(
        f"streaming pipeline: shuffle_buffer={cfg.data.shuffle_buffer:,} "
        f"sort_pool={cfg.data.sort_pool:,} max_tokens={cfg.data.max_tokens}"
    )
    marks = [m for m in (500_000, 1_000_000, 2_000_000) if m <= args.pairs]
    drive_pipeline(cfg, marks)
    check_resume(cfg_path, prefix, args.resume_steps, work)


if __name__ == "__main__":
    main()

"""Constrained translation on test_2016_flickr: the issue's three experiments in one run.

    python scripts/bench_constraints.py RUN [--beam 5] [--rounds 3]
        [--glossary tests/data/glossary_de_en.tsv] [--seed 0]

1. Constraints from the reference (Post and Vilar 2018's experiment): per sentence, one
   or two reference words or phrases (runs of up to two words) that the unconstrained
   beam output lacks, chosen at random (--seed); the share of constraints met (as words
   in the output), BLEU without and with, and sentences/s without and with (the two
   take turns on chunks of 100 sentences, --rounds times; medians and the median of
   the per-round ratios).
2. A glossary that overrides the model: on the sentences whose source holds a term, the
   share of terms whose rendering (any of its choices) the output uses, without and
   with the glossary, and BLEU (those sentences, and the whole set) without and with.
3. Prefixes: the first k reference words (k = 1, 2, 3) and a space as each line's
   prefix; how many outputs begin with them, and the BLEU of the continuation (output
   and reference without their first k words) against the unconstrained output's
   continuation, on all sentences and on those whose unconstrained output began
   otherwise.

Sentences are translated one a line (no splitting); model loading is excluded.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import string
import time
from pathlib import Path

import torch

from nmt.data import read_lines
from nmt.options import Constraints
from nmt.text.documents import translate_lines
from nmt.text.glossary import Glossary
from nmt.training.validation import bleu
from nmt.translate import Translator

CHUNK = 100  # sentences timed with and without constraints in turn
MULTI30K = Path(os.environ.get("MULTI30K_DIR", "../shared/data/multi30k"))
GLOSSARY = Path(__file__).resolve().parents[1] / "tests" / "data" / "glossary_de_en.tsv"


def words(text: str) -> list[str]:
    """Runs of letters and digits (a hyphen or an apostrophe ends one: "tee-shirt" holds
    "tee"), the first letter's case aside."""
    return [w[:1].lower() + w[1:] for w in re.findall(r"\w+", text)]


def holds(text: str, phrase: str) -> bool:
    """Whether `phrase`'s words occur in `text`'s, in a row."""
    have, want = words(text), words(phrase)
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def missing_phrases(hyp: str, ref: str, rng: random.Random) -> list[str]:
    """One or two runs of up to two reference words (punctuation around them stripped)
    that `hyp` lacks, in reference order."""
    runs, run = [], []
    for word in (w.strip(string.punctuation) for w in ref.split()):
        if word and not holds(hyp, word):
            run.append(word)
        elif run:
            runs, run = runs + [run], []
    runs = [r[i : i + 2] for r in runs + ([run] if run else []) for i in range(0, len(r), 2)]
    chosen = sorted(rng.sample(range(len(runs)), min(len(runs), rng.choice([1, 2]))))
    return [" ".join(runs[i]) for i in chosen]


def timed(translator: Translator, lines: list[str], beam: int, constraints=None):
    start = time.perf_counter()
    found = translator.translate(lines, beam=beam, constraints=constraints)
    return [h[0] for h in found], time.perf_counter() - start


def reference_constraints(translator, src, refs, beam, rounds, seed) -> None:
    base, _ = timed(translator, src, beam)
    rng = random.Random(seed)
    chosen = [missing_phrases(h.text, r, rng) for h, r in zip(base, refs, strict=True)]
    given = [Constraints(include=tuple((p,) for p in c)) if c else None for c in chosen]
    rates: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(rounds):  # the two take turns on chunks: a slow spell hits both alike
        seconds, out = {"without": 0.0, "with": 0.0}, []
        for i in range(0, len(src), CHUNK):
            for name in ("without", "with") if i // CHUNK % 2 == 0 else ("with", "without"):
                cons = given[i : i + CHUNK] if name == "with" else None
                hyps, spent = timed(translator, src[i : i + CHUNK], beam, cons)
                seconds[name] += spent
                out += hyps if name == "with" else []
        for name, spent in seconds.items():
            rates[name].append(len(src) / spent)
    n = sum(map(len, chosen))
    met = sum(holds(h.text, p) for h, c in zip(out, chosen, strict=True) for p in c)
    print(f"1. constraints from the reference: {n} phrases on {sum(map(bool, chosen))} sentences")
    flagged = sum(h.missed for h in out)
    print(f"   met (as words in the output): {met}/{n} = {100 * met / n:.1f}%; flagged: {flagged}")
    without, with_ = (bleu([h.text for h in x], refs)[0] for x in (base, out))
    print(f"   BLEU without {without:.2f}, with {with_:.2f} ({with_ - without:+.2f})")
    pairs = list(zip(rates["with"], rates["without"], strict=True))
    ratio = statistics.median(w / o for w, o in pairs)
    print(
        f"   sent/s without {statistics.median(rates['without']):.1f},"
        f" with {statistics.median(rates['with']):.1f}: ratio {ratio:.2f}"
        f" (rounds, with/without: {', '.join(f'{w:.1f}/{o:.1f}' for w, o in pairs)})"
    )
    for h, c in zip(out, chosen, strict=True):
        for p in c:
            if not holds(h.text, p):
                print(f"   not met: {p!r} in {h.text!r} (flagged {h.missed})")


def glossary_override(translator, src, refs, beam, path: Path) -> None:
    glossary = Glossary.read(path)
    terms = [glossary.constraints(s) for s in src]
    runs = {}
    for name, g in (("without", None), ("with", glossary)):
        found = translate_lines(translator, src, split=False, glossary=g, beam=beam)
        runs[name] = [h[0] for h in found]
    idx = [i for i, t in enumerate(terms) if t]
    n = sum(len(terms[i]) for i in idx)
    print(
        f"2. glossary {path.name}: {len(glossary.terms)} terms;"
        f" {n} term occurrences in {len(idx)} of {len(src)} sentences"
    )
    for name, hyps in runs.items():
        used = [any(holds(hyps[i].text, alt) for alt in c) for i in idx for c in terms[i]]
        some = bleu([hyps[i].text for i in idx], [refs[i] for i in idx])[0]
        whole = bleu([h.text for h in hyps], refs)[0]
        print(
            f"   {name:>7}: terms used {sum(used)}/{n} = {100 * sum(used) / n:.1f}%;"
            f" BLEU on those sentences {some:.2f}, on all {whole:.2f};"
            f" flagged {sum(h.missed for h in hyps)}"
        )
    for i in idx:
        for choice in terms[i]:
            text = runs["with"][i].text
            if not any(holds(text, alt) for alt in choice):
                print(f"   not used: {'|'.join(choice)!r} in {text!r} ({src[i]!r})")


def prefixes(translator, src, refs, beam) -> None:
    base, _ = timed(translator, src, beam)
    print("3. prefixes: the first k reference words")
    for k in (1, 2, 3):
        idx = [i for i, r in enumerate(refs) if len(r.split()) > k]
        # a space after the words: what follows starts a word ("On " never becomes "One")
        given = [Constraints(prefix=" ".join(refs[i].split()[:k]) + " ") for i in idx]
        hyps, _ = timed(translator, [src[i] for i in idx], beam, given)
        starts = [h.text.split()[:k] == refs[i].split()[:k] for h, i in zip(hyps, idx, strict=True)]
        rest = [" ".join(refs[i].split()[k:]) for i in idx]
        cont = bleu([" ".join(h.text.split()[k:]) for h in hyps], rest)[0]
        plain = bleu([" ".join(base[i].text.split()[k:]) for i in idx], rest)[0]
        print(
            f"   k={k}: {sum(starts)}/{len(idx)} outputs begin with them;"
            f" continuation BLEU {cont:.2f} (the unconstrained output's: {plain:.2f})"
        )
        # where the prefix says something the unconstrained output did not
        new = [j for j, i in enumerate(idx) if base[i].text.split()[:k] != refs[i].split()[:k]]
        cont = bleu([" ".join(hyps[j].text.split()[k:]) for j in new], [rest[j] for j in new])
        plain = bleu([" ".join(base[idx[j]].text.split()[k:]) for j in new], [rest[j] for j in new])
        print(
            f"        on the {len(new)} whose unconstrained output began otherwise:"
            f" {cont[0]:.2f} (unconstrained: {plain[0]:.2f})"
        )
        for h, i in zip(hyps, idx, strict=True):
            if h.text.split()[:k] != refs[i].split()[:k]:
                print(f"        does not begin with {refs[i].split()[:k]}: {h.text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glossary", type=Path, default=GLOSSARY)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--src", default=str(MULTI30K / "test_2016_flickr.de.gz"))
    parser.add_argument("--ref", default=str(MULTI30K / "test_2016_flickr.en.gz"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator = Translator.load(args.run, device="cpu", precision=args.precision)
    src, refs = read_lines(Path(args.src)), read_lines(Path(args.ref))
    translator.translate(src[:100], beam=args.beam)  # warm-up
    print(f"{len(src)} sentences, beam {args.beam}, {args.precision}, {args.threads} threads")
    reference_constraints(translator, src, refs, args.beam, args.rounds, args.seed)
    glossary_override(translator, src, refs, args.beam, args.glossary)
    prefixes(translator, src, refs, args.beam)


if __name__ == "__main__":
    main()

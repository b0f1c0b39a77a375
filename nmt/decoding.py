"""Decoding id sequences: sorted by length into token-budget batches, padded, searched,
and returned in input order, one n-best list per sequence. `nmt.translate` (text in,
text out) and `nmt.validation` (ids, while training) both decode through `decode`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from nmt.config import DecodeConfig, NmtError
from nmt.corpus import inference_batches, pad_batch
from nmt.plan import Plan
from nmt.scoring import BeamOptions, Hypotheses, output_limits, step_rules
from nmt.search import beam_search, sample
from nmt.tokenizer import BOS, EOS, PAD


class DecodeError(NmtError):
    """A decoding option out of its range."""


def check_options(**options: float | None) -> None:
    """beam, nbest and max_tokens: >= 1; alpha: >= 0; None: the config's value."""
    for name, value in options.items():
        least = 0 if name == "alpha" else 1
        if value is not None and not (math.isfinite(value) and value >= least):
            raise DecodeError(f"{name} must be a number >= {least}, got {value}")


@dataclass(frozen=True)
class Hypothesis:
    text: str
    score: float  # the search's ranking score (log-probability / length penalty)
    logprob: float  # total log-probability of the pieces and EOS under the model
    tokens: tuple[int, ...]  # target piece ids, without BOS and EOS
    alignment: tuple[int, ...] = ()  # per target piece, the source piece attended most

    def alignment_pairs(self) -> str:
        """'i-j' pairs: source piece i aligned to target piece j, as fast_align writes them."""
        return " ".join(f"{i}-{j}" for j, i in enumerate(self.alignment) if i >= 0)


EMPTY = Hypothesis("", 0.0, 0.0, ())


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: the most probable token
    top_k: int = 0  # 0: the whole vocabulary

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise DecodeError(f"sampling temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise DecodeError(f"sampling top_k must be >= 0, got {self.top_k}")


def decode(
    model,
    src_ids: list[list[int]],
    options: BeamOptions,
    *,
    plan: Plan,
    cfg: DecodeConfig,
    sampling: Sampling | None = None,
) -> list[list[Hypothesis]]:
    """`options.nbest` hypotheses (text left empty) per sequence of source ids (pieces + EOS),
    best first, searched (a beam of 1: greedily) or drawn (`sampling`) in batches of
    `cfg.max_tokens` tokens; an empty sequence gives EMPTY."""
    results = [[EMPTY] * options.nbest for _ in src_ids]
    lengths = [len(ids) for ids in src_ids]
    specials = {"bos": BOS, "eos": EOS, "pad": PAD, "shrink_step": plan.shrink_step}
    draw = sampling or (Sampling(temperature=0.0) if options.beam_size == 1 else None)
    if draw:
        rules = step_rules(options.min_len, options.no_repeat_ngram, bos=BOS, eos=EOS, pad=PAD)
        specials.update(temperature=draw.temperature, top_k=draw.top_k, rules=rules)
    else:
        specials.update(options=options)
    search = sample if draw else beam_search
    with torch.inference_mode(), plan.autocast():
        for batch in inference_batches(lengths, cfg.max_tokens):
            batch = [i for i in batch if lengths[i] > 1]  # empty lines stay empty
            if not batch:
                continue
            src, src_len = pad_batch([src_ids[i] for i in batch], multiple=plan.src_multiple)
            src, src_len = src.to(plan.device), src_len.to(plan.device)
            max_len = output_limits(src_len, cfg.max_len_a, cfg.max_len_b)
            found = search(model, src, src_len, max_len=max_len, **specials)
            for i, hyps in zip(batch, _hypotheses(found, options.nbest), strict=True):
                results[i] = hyps
    return results


def _hypotheses(found: Hypotheses, nbest: int) -> list[list[Hypothesis]]:
    """The first `nbest` of each sentence, read off the device once per batch."""
    pieces = found.pieces(EOS)
    scores, logprobs, aligns = (x[:, :nbest].tolist() for x in found[1:])
    out: list[list[Hypothesis]] = [[] for _ in pieces]
    for b, k in itertools.product(range(len(pieces)), range(nbest)):
        ids = tuple(pieces[b][k])
        align = tuple(aligns[b][k][1 : len(ids) + 1])
        out[b].append(Hypothesis("", scores[b][k], logprobs[b][k], ids, align))
    return out

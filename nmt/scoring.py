"""What the searches look for, and may generate: options, scores and step rules.

Shapes: B sentences, n hypotheses each, L longest output + 1, N decoder rows, V
vocabulary size. A step rule edits the step's log-probabilities (N, V) in place (-inf:
never); the searches apply `step_rules` in turn, as Hugging Face applies its logits
processors: PAD and BOS never, EOS not before the minimum length and always at a row's
length limit, optionally no repeated n-grams. A new mask is one more rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass(frozen=True, kw_only=True)
class BeamOptions:
    """What beam search looks for, settled by `nmt.decoding.decode` from a call's checked
    `SearchOptions` and the run's checked decode config."""

    beam_size: int = 5
    nbest: int = 1  # hypotheses returned per sentence, at most beam_size
    alpha: float = 0.0  # GNMT length penalty exponent; 0 ranks by raw log-probability
    beta: float = 0.0  # GNMT coverage penalty weight; 0 turns it off
    min_len: int = 1  # outputs shorter than this (EOS included) are not allowed
    no_repeat_ngram: int = 0  # block any n-gram of this size from repeating; 0: off


class Hypotheses(NamedTuple):
    """The n best hypotheses per sentence, best first (n = 1 for greedy and sampling)."""

    tokens: Tensor  # (B, n, L) BOS-first ids, PAD after EOS
    scores: Tensor  # (B, n) log-probability / length penalty (+ coverage penalty)
    logprob: Tensor  # (B, n) total log-probability under the model
    align: Tensor  # (B, n, L) source position each token attended most; -1 where none
    missed: Tensor | None = None  # (B, n) required phrases not in it (`nmt.constraints`)

    def pieces(self, eos: int) -> list[list[list[int]]]:
        """Each sentence's hypotheses as piece ids, without BOS, EOS and padding."""
        rows = self.tokens[:, :, 1:].tolist()
        return [[ids[: ids.index(eos)] if eos in ids else ids for ids in row] for row in rows]


def length_penalty(length: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT's ((5 + length) / 6) ** alpha; alpha = 0 ranks by raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


def coverage_penalty(coverage: Tensor, src_mask: Tensor, beta: float) -> Tensor:
    """GNMT's beta * sum_j log(min(attention received by source j, 1)); coverage (..., S)."""
    covered = coverage.clamp(min=1e-6, max=1.0).log().masked_fill(~src_mask, 0.0)
    return beta * covered.sum(-1)


def output_limits(src_len: Tensor, a: float, b: int) -> Tensor:
    """Per-sentence output limit a * source length + b, at least 1, in pieces incl. EOS."""
    return (src_len.float() * a + b).long().clamp(min=1)


class Step(NamedTuple):
    """What a rule sees of the step."""

    t: int  # the output position being chosen; 0 is the first after BOS
    tokens: Tensor  # (N, t + 1) each row's output so far, BOS first
    max_len: Tensor  # (N,) each row's output limit, EOS included
    first_limit: int  # max_len.min() as a Python int: no host sync before any limit


Rule = Callable[[Tensor, Step], Tensor]


def step_rules(min_len: int, no_repeat_ngram: int, *, bos: int, eos: int, pad: int) -> list[Rule]:
    """The masks every search applies, in this order."""
    rules = [partial(never, ids=(pad, bos)), partial(eos_within, min_len=min_len, eos=eos)]
    return rules + ([partial(no_repeat, n=no_repeat_ngram, pad=pad)] if no_repeat_ngram else [])


def never(logp: Tensor, step: Step, *, ids: tuple[int, ...]) -> Tensor:
    for i in ids:
        logp[:, i] = NEG_INF
    return logp


def eos_within(logp: Tensor, step: Step, *, min_len: int, eos: int) -> Tensor:
    """No EOS before min_len; rows at their length limit must emit EOS."""
    if step.t + 1 < min_len:
        logp[:, eos] = NEG_INF
    if step.t + 1 >= step.first_limit:
        at_limit = (step.t >= step.max_len - 1)[:, None]  # (N, 1)
        not_eos = torch.arange(logp.size(-1), device=logp.device) != eos  # (V,)
        logp.masked_fill_(at_limit & not_eos, NEG_INF)
    return logp


def no_repeat(logp: Tensor, step: Step, *, n: int, pad: int) -> Tensor:
    """Bans the tokens that would repeat an n-gram of the row's output so far."""
    if step.t + 1 < n:
        return logp
    windows = step.tokens.unfold(-1, n, 1)  # (N, W, n): every n-gram so far
    last = step.tokens[:, step.t + 2 - n :]  # (N, n - 1): what the next n-gram starts with
    repeats = (windows[..., :-1] == last[:, None]).all(-1)  # (N, W)
    banned = torch.where(repeats, windows[..., -1], pad)  # PAD is banned anyway
    return logp.scatter_(1, banned, NEG_INF)


def apply(rules: Sequence[Rule], logp: Tensor, step: Step) -> Tensor:
    for rule in rules:
        logp = rule(logp, step)
    return logp

"""Greedy, sampling and batched beam search over any model with `encode` and `decode_step`.

Shapes: B sentences, K beams, N = B * K decoder rows, L = longest output + 1
(BOS first), S source length, V vocabulary size.

The model contract: `encode(src, src_len) -> (memory, state)` and
`decode_step(token (N,), state, memory) -> (logp (N, V) fp32, state, attn)`,
where logp is a fresh tensor search may edit in place and attn is the step's
attention over the source, (N, S), or None. Memory and state only need
`.select(rows)`. The state has one row per hypothesis (per sentence at the
first step, where all of a sentence's hypotheses are BOS); the memory keeps one
row per sentence, shared by the sentence's K consecutive state rows. Search
never looks inside the model's tuples and never imports the model. Each
sentence has its own output length limit (`max_len`, (B,)); at that limit
every hypothesis ends with EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

NEG_INF = float("-inf")


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int = 5
    alpha: float = 0.0  # GNMT length penalty exponent; 0 ranks by raw log-probability
    beta: float = 0.0  # GNMT coverage penalty weight; 0 turns it off
    min_len: int = 1  # outputs shorter than this (EOS included) are not allowed
    no_repeat_ngram: int = 0  # block any n-gram of this size from repeating; 0: off
    nbest: int = 1  # hypotheses returned per sentence, at most beam_size


class Hypotheses(NamedTuple):
    """The n best hypotheses per sentence, best first (n = 1 for greedy and sampling)."""

    tokens: Tensor  # (B, n, L) BOS-first ids, PAD after EOS
    scores: Tensor  # (B, n) log-probability / length penalty (+ coverage penalty)
    logprob: Tensor  # (B, n) total log-probability under the model
    align: Tensor  # (B, n, L) source position each token attended most; -1 where none


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


@torch.no_grad()
def greedy(
    model, src: Tensor, src_len: Tensor, *, max_len: Tensor, bos: int, eos: int, pad: int
) -> Hypotheses:
    """The most probable token at each step; K = 1, scores are total log-probabilities."""
    return sample(model, src, src_len, max_len=max_len, temperature=0.0, bos=bos, eos=eos, pad=pad)


@torch.no_grad()
def sample(
    model,
    src: Tensor,
    src_len: Tensor,
    *,
    max_len: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    bos: int,
    eos: int,
    pad: int,
) -> Hypotheses:
    """Ancestral sampling (temperature 0: greedy); top_k > 0 samples among the k best.

    Scores are the model's log-probabilities of the chosen tokens, summed.
    """
    B, steps = src.size(0), int(max_len.max())
    memory, state = model.encode(src, src_len)
    tokens = src.new_full((B, steps + 1), pad)
    tokens[:, 0] = bos
    align = torch.full_like(tokens, -1)
    scores = torch.zeros(B, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    first_limit = int(max_len.min())
    for t in range(steps):
        logp, state, attn = model.decode_step(tokens[:, t], state, memory)
        logp = _mask(logp, t, max_len, first_limit, 1, (bos, eos, pad))
        if temperature == 0.0:
            token = logp.argmax(dim=-1)
        else:
            weights = logp / temperature
            if top_k:
                kth = weights.topk(min(top_k, weights.size(-1)), dim=-1).values[:, -1:]
                weights = weights.masked_fill(weights < kth, NEG_INF)
            token = torch.multinomial(weights.softmax(-1), 1).squeeze(1)
        tokens[:, t + 1] = token.masked_fill(finished, pad)
        if attn is not None:
            align[:, t + 1] = attn.argmax(-1).masked_fill(finished, -1)
        scores += logp.gather(1, token[:, None]).squeeze(1).masked_fill(finished, 0.0)
        finished |= token == eos
        if finished.all():  # a host sync per step, cheaper than decoding to the limit
            break
    return Hypotheses(tokens[:, None], scores[:, None], scores[:, None], align[:, None])


@torch.no_grad()
def beam_search(
    model,
    src: Tensor,
    src_len: Tensor,
    *,
    max_len: Tensor,
    options: BeamOptions,
    bos: int,
    eos: int,
    pad: int,
    shrink_step: int = 1,
) -> Hypotheses:
    """The n = options.nbest best hypotheses per sentence, best first.

    A score is the total log-probability divided by `length_penalty(length,
    alpha)` (length counts EOS, not BOS), plus the coverage penalty. Shapes
    inside the loop are those of the A sentences still searching: a finished
    sentence leaves the batch, so its rows stop costing decoder work. A
    sentence stops as soon as its n best can no longer change, so stopping
    early never changes the result. Finished sentences leave in groups of
    `shrink_step` (step f).
    """
    B, K, n, steps = src.size(0), options.beam_size, options.nbest, int(max_len.max())
    if not 1 <= n <= K:
        raise ValueError(f"nbest must be between 1 and the beam size {K}, not {n}")
    device = src.device
    memory, state = model.encode(src, src_len)  # one state row per sentence until step 0

    sentence = torch.arange(B, device=device)  # (A,) which sentence each row block is
    searching = torch.ones(B, dtype=torch.bool, device=device)  # (A,) not yet handed in
    src_mask = (torch.arange(src.size(1), device=device) < src_len[:, None])[:, None]  # (A,1,S)
    alive = src.new_full((B, K, steps + 1), pad)
    alive[:, :, 0] = bos
    alive_align = torch.full_like(alive, -1)
    alive_score = torch.full((B, K), NEG_INF, device=device)
    alive_score[:, 0] = 0.0  # all beams start identical: keep one
    coverage = torch.zeros(B, K, src.size(1), device=device)  # attention received so far
    done, done_align = alive.clone(), alive_align.clone()
    done_score = torch.full((B, K), NEG_INF, device=device)
    done_logprob = done_score.clone()
    results = Hypotheses(done.clone(), done_score.clone(), done_logprob.clone(), done_align.clone())

    limits = _Limits.of(max_len, K, options.alpha)
    top_half = torch.arange(2 * K, device=device) < K  # the ranks that may finish
    for t in range(steps):
        A = sentence.numel()
        # a. score every continuation of every live beam; at step 0 the K beams are one
        # (BOS), so each sentence decodes one row: 1/K of that step's work
        R = K if t else 1  # decoder rows per sentence
        logp, state, attn = model.decode_step(alive[:, :R, t].flatten(), state, memory)
        V = logp.size(-1)
        row_limits = limits.rows if t else max_len
        logp = _mask(logp, t, row_limits, limits.first, options.min_len, (bos, eos, pad))
        logp = logp.view(A, R, V)
        if options.no_repeat_ngram and t + 1 >= options.no_repeat_ngram:
            logp = _block_repeats(logp, alive[:, :R, : t + 1], options.no_repeat_ngram, pad)
        # in place: a fresh (N, V) tensor per step costs page faults, not just a pass
        total = logp.add_(alive_score[:, :R, None])  # (A, R, V)
        if R * V < 2 * K:  # a vocabulary too small for 2K candidates from one row
            total = F.pad(total, (0, 0, 0, K - R), value=NEG_INF)

        # b. 2K candidates guarantee K that do not end in EOS
        cand_score, flat = top_k(total.view(A, -1), 2 * K)  # (A, 2K)
        beam, token = flat // V, flat % V
        cand = gather_beams(alive, beam)  # (A, 2K, L)
        cand[:, :, t + 1] = token
        cand_align = gather_beams(alive_align, beam)
        cand_coverage = gather_beams(coverage, beam) if options.beta else coverage
        if attn is not None:
            attn = attn.view(A, R, -1).expand(A, K, -1)  # (A, K, S)
            step_attn = attn.argmax(-1)  # (A, K): each beam's aligned position
            cand_align[:, :, t + 1] = step_attn.gather(1, beam)
            if options.beta:
                cand_coverage = cand_coverage + gather_beams(attn.float(), beam)
        ends = token == eos

        # c. an ended candidate is finished only if it ranks among the top K
        final = cand_score / length_penalty(t + 1.0, options.alpha)
        if options.beta:
            final = final + coverage_penalty(cand_coverage, src_mask, options.beta)
        finished = torch.where(ends & top_half, final, NEG_INF)
        pool_score = torch.cat([done_score, finished], 1)  # (A, 3K)
        done_score, index = pool_score.topk(K, dim=1)
        done_logprob = torch.cat([done_logprob, cand_score], 1).gather(1, index)
        done = gather_beams(torch.cat([done, cand], 1), index)
        done_align = gather_beams(torch.cat([done_align, cand_align], 1), index)

        # d. the rest keep searching, and their decoder states follow them
        alive_score, keep = cand_score.masked_fill(ends, NEG_INF).topk(K, dim=1)
        alive, alive_align = gather_beams(cand, keep), gather_beams(cand_align, keep)
        coverage = gather_beams(cand_coverage, keep) if options.beta else coverage
        if t:
            parent = beam.gather(1, keep) + limits.offset  # (A, K) state rows
        else:  # every beam continues its sentence's one row
            parent = torch.arange(A, device=device)[:, None].expand(A, K)
        state = state.select(parent.flatten())  # N = A * K rows

        # e. a sentence is done once it has K finished hypotheses (fairseq's rule), or
        # once no live beam can still enter its n best: no score can rise above
        # `reachable` (log-probabilities only fall; the coverage penalty is <= 0)
        largest = limits.penalty.clamp(min=length_penalty(t + 2.0, options.alpha))  # alpha < 0
        reachable = alive_score[:, 0] / largest
        certain = done_score[:, n - 1] >= reachable  # also true once no beam is alive
        over = searching & ((done_score[:, -1] > NEG_INF) | certain)
        if not over.any():  # a host sync per step, paid back by every row it removes
            continue

        # f. finished sentences hand in their hypotheses and leave the batch, in steps of
        # `shrink_step` sentences: on a CPU each new row count builds new bf16 matmul
        # kernels (oneDNN), so there row counts that recur across batches can save more
        # than the finished rows cost
        for out, part in zip(results, (done, done_score, done_logprob, done_align), strict=True):
            out[sentence[over]] = part[over]
        searching = searching & ~over
        live = int(searching.sum())
        if live == 0:
            break
        size = -(-live // shrink_step) * shrink_step
        if size >= A:
            continue
        left = torch.argsort(~searching, stable=True)[:size]  # (A',) searching ones first
        rows = (left[:, None] * K + torch.arange(K, device=device)).flatten()
        memory, state = memory.select(left), state.select(rows)
        sentence, max_len, src_mask, searching = (
            x[left] for x in (sentence, max_len, src_mask, searching)
        )
        alive, alive_align, alive_score, coverage = (
            x[left] for x in (alive, alive_align, alive_score, coverage)
        )
        done, done_align, done_score, done_logprob = (
            x[left] for x in (done, done_align, done_score, done_logprob)
        )
        limits = _Limits.of(max_len, K, options.alpha)
    return Hypotheses(*(x[:, :n] for x in results))


class _Limits(NamedTuple):
    """Per-sentence constants of the A sentences still searching."""

    rows: Tensor  # (A * K,) each row's output limit
    first: int  # the smallest limit, as a Python int (no host sync per step)
    offset: Tensor  # (A, 1) the first row of each sentence
    penalty: Tensor  # (A,) the length penalty at each sentence's limit

    @classmethod
    def of(cls, max_len: Tensor, K: int, alpha: float) -> _Limits:
        offset = torch.arange(max_len.numel(), device=max_len.device)[:, None] * K
        penalty = length_penalty(max_len.float(), alpha)
        return cls(max_len.repeat_interleave(K), int(max_len.min()), offset, penalty)


def _mask(
    logp: Tensor, t: int, max_len: Tensor, first_limit: int, min_len: int, specials: tuple
) -> Tensor:
    """logp (N, V), edited in place: PAD and BOS are never generated, EOS not before
    min_len, and rows at their length limit (max_len, (N,)) must emit EOS.

    `first_limit` is max_len.min() as a Python int, so that steps before any
    limit skip the check without a host sync.
    """
    bos, eos, pad = specials
    logp[:, pad] = NEG_INF
    logp[:, bos] = NEG_INF
    if t + 1 < min_len:
        logp[:, eos] = NEG_INF
    if t + 1 >= first_limit:
        at_limit = (t >= max_len - 1)[:, None]  # (N, 1)
        not_eos = torch.arange(logp.size(-1), device=logp.device) != eos  # (V,)
        logp.masked_fill_(at_limit & not_eos, NEG_INF)
    return logp


def _block_repeats(logp: Tensor, prefix: Tensor, n: int, pad: int) -> Tensor:
    """logp (B, K, V), edited in place; prefix (B, K, t+1): ban tokens that would
    repeat an n-gram."""
    windows = prefix.unfold(-1, n, 1)  # (B, K, W, n): every n-gram so far
    last = prefix[:, :, prefix.size(-1) - n + 1 :]  # (B, K, n-1): what the next n-gram starts with
    repeats = (windows[..., :-1] == last[:, :, None]).all(-1)  # (B, K, W)
    banned = torch.where(repeats, windows[..., -1], pad)  # PAD is banned anyway
    return logp.scatter_(2, banned, NEG_INF)


def top_k(scores: Tensor, k: int, groups: int = 32) -> tuple[Tensor, Tensor]:
    """scores (R, C) -> the k largest values per row, sorted, and their columns:
    `scores.topk(k)`'s values (ties may pick other columns), about 3x faster on CPU.

    `topk` over the K * V scores of a sentence is the costliest step of beam
    search after the matmuls. Split each row into `width` interleaved sets of
    `groups` columns (i, i + width, ...): each of the k largest lies in one of
    the k sets with the largest maxima, since k sets with a larger maximum would
    hold k larger values. So one vectorized max over the row and two small
    topks find them.
    """
    R, C = scores.shape
    groups = max(1, min(groups, C // k))  # at least k sets
    if C % groups:
        scores = F.pad(scores, (0, groups - C % groups), value=NEG_INF)
    width = scores.size(1) // groups
    columns = scores.view(R, groups, width)  # [r, j, i] = scores[r, j * width + i]
    best_sets = columns.amax(1).topk(k, dim=1).indices  # (R, k)
    candidates = columns.gather(2, best_sets[:, None].expand(-1, groups, -1))  # (R, groups, k)
    values, position = candidates.view(R, -1).topk(k, dim=1)
    cols = (position // k) * width + best_sets.gather(1, position % k)
    return values, cols.clamp_(max=C - 1)  # padding only ever ties at -inf


def gather_beams(x: Tensor, index: Tensor) -> Tensor:
    """x (B, K, ...) and index (B, J) -> (B, J, ...)."""
    expanded = index.view(*index.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
    return x.gather(1, expanded)

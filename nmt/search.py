"""Greedy, sampling and batched beam search over any model with `encode` and `decode_step`.

Shapes: B sentences, A of them in the batch, K beams, N decoder rows (A * K; A at the
first step), L = longest output + 1 (BOS first), S source length, V vocabulary size.

The model contract: `encode(src, src_len) -> (memory, state)` and `decode_step(token
(N,), state, memory) -> (logp (N, V) fp32, state, attn)`, where logp is a fresh tensor
search may edit in place and attn the step's attention over the source, (N, S), or
None. Memory and state only need `.select(rows)`: the state has a row per hypothesis
(per sentence at the first step, where all of its hypotheses are BOS), the memory a
row per sentence, shared by its K consecutive state rows.

Each step's log-probabilities pass through the `nmt.scoring` rules in turn; every
sentence has its own output limit (`max_len`, (B,)). A sentence that is done leaves the
batch (`_hand_in`), so its rows stop costing decoder work.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt import constraints
from nmt.constraints import Phrases
from nmt.kernels.topk import top_k
from nmt.scoring import (
    NEG_INF,
    BeamOptions,
    Hypotheses,
    Rule,
    Step,
    apply,
    coverage_penalty,
    length_penalty,
    step_rules,
)


class _Drawn(NamedTuple):
    """Greedy search's and sampling's state per sentence in the batch, (A, ...) each."""

    index: Tensor  # (A,) the sentence's row in the results
    searching: Tensor  # (A,) not yet handed in
    max_len: Tensor  # (A,)
    tokens: Tensor  # (A, L)
    align: Tensor  # (A, L)
    score: Tensor  # (A,) total log-probability of the tokens drawn

    def outputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """What a sentence hands in when it is done: tokens, align, score."""
        return self.tokens, self.align, self.score


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
    rules: Sequence[Rule] | None = None,
    shrink_step: int = 1,
) -> Hypotheses:
    """Ancestral sampling (temperature 0: greedy); top_k > 0 samples among the k best.

    Scores are the model's log-probabilities of the chosen tokens, summed. `rules`:
    default `step_rules(1, 0, ...)`. A sentence leaves the batch once it has drawn
    EOS, in groups of `shrink_step`.
    """
    B, L, device = src.size(0), int(max_len.max()) + 1, src.device
    memory, state = model.encode(src, src_len)
    rules = rules or step_rules(1, 0, bos=bos, eos=eos, pad=pad)
    tokens = src.new_full((B, L), pad)
    tokens[:, 0] = bos
    searching = torch.ones(B, dtype=torch.bool, device=device)
    index, score = torch.arange(B, device=device), torch.zeros(B, device=device)
    live = _Drawn(index, searching, max_len, tokens, torch.full_like(tokens, -1), score)
    done = _Drawn(*(x.clone() for x in live))
    first_limit = int(max_len.min())
    for t in range(L - 1):
        logp, state, attn = model.decode_step(live.tokens[:, t], state, memory)
        logp = apply(rules, logp, Step(t, live.tokens[:, : t + 1], live.max_len, first_limit))
        token = _draw(logp, temperature, top_k)
        live.tokens[:, t + 1] = token
        if attn is not None:
            live.align[:, t + 1] = attn.argmax(-1)
        live.score.add_(logp.gather(1, token[:, None]).squeeze(1))
        over = live.searching & (token == eos)
        if not over.any():  # a host sync per step, paid back by every row that leaves
            continue
        live, left = _hand_in(live, over, done.outputs(), live.outputs(), shrink_step)
        if left is not None:
            if not left.numel():
                break
            memory, state = memory.select(left), state.select(left)
            first_limit = int(live.max_len.min())
    score = done.score[:, None]
    return Hypotheses(done.tokens[:, None], score, score, done.align[:, None])


# the most probable token at each step; scores are total log-probabilities
greedy = functools.partial(sample, temperature=0.0)


def _draw(logp: Tensor, temperature: float, top_k: int) -> Tensor:
    """One token per row (N,) from logp (N, V): the best, or drawn at `temperature`."""
    if temperature == 0.0:
        return logp.argmax(dim=-1)
    weights = logp / temperature
    if top_k:
        kth = weights.topk(min(top_k, weights.size(-1)), dim=-1).values[:, -1:]
        weights = weights.masked_fill(weights < kth, NEG_INF)
    return torch.multinomial(weights.softmax(-1), 1).squeeze(1)


class Beams(NamedTuple):
    """K hypotheses per sentence, (A, K, ...) each: the live ones or the finished ones."""

    tokens: Tensor  # (A, K, L)
    align: Tensor  # (A, K, L)
    score: Tensor  # (A, K) live: total log-probability; finished: the ranking score
    logprob: Tensor  # (A, K) total log-probability
    coverage: Tensor  # (A, K, S) attention received by each source position (S = 0: no beta)
    met: Tensor | None = None  # (A, K, C) each constraint met (`nmt.constraints`)
    matched: Tensor | None = None  # (A, K, C, J) bits: which prefixes of each phrase end it

    def gather(self, index: Tensor) -> Beams:
        """index (A, J) -> (A, J, ...) each."""
        return Beams(*(None if x is None else gather_beams(x, index) for x in self))

    def merge(self, other: Beams, k: int) -> Beams:
        """The k best of the two pools: by score, those that met their constraints first."""
        pairs = zip(self, other, strict=True)
        both = Beams(*(None if a is None else torch.cat((a, b), 1) for a, b in pairs))
        return both.gather(constraints.rank_key(both.score, both.met).topk(k, dim=1).indices)


class _Beamed(NamedTuple):
    """Beam search's state per sentence in the batch, (A, ...) each."""

    index: Tensor  # (A,) the sentence's row in the results
    searching: Tensor  # (A,) not yet handed in
    max_len: Tensor  # (A,)
    src_mask: Tensor  # (A, 1, S) real source positions
    alive: Beams
    done: Beams
    phrases: Phrases | None  # the sentences' constraints


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
    phrases: Phrases | None = None,
) -> Hypotheses:
    """The n = options.nbest best hypotheses per sentence, best first, scored by their
    log-probability / `length_penalty(length, alpha)` (length counts EOS, not BOS) plus
    the coverage penalty. Of each step's 2K best continuations, those ending in EOS among
    the top K join the sentence's pool of K finished ones; the K best others stay live.
    A sentence stops once it has K finished (fairseq's rule: a live beam might still have
    overtaken one) or no live beam can enter its n best, and leaves the batch then.
    `phrases` (`nmt.constraints.pack`): sentences with required phrases choose their
    beams by banks instead, the others exactly as without; a limit below a prefix's
    length is raised to fit it and EOS."""
    K, n = options.beam_size, options.nbest
    memory, state = model.encode(src, src_len)  # one state row per sentence until step 0
    live = _start(src, src_len, max_len, K, bos, pad, options.beta > 0, phrases)
    results, limits = live.done, _Limits.of(live.max_len, K, options.alpha)
    rules = step_rules(options.min_len, options.no_repeat_ngram, bos=bos, eos=eos, pad=pad)
    banked = phrases is not None and bool(phrases.banked.any())
    for t in range(int(live.max_len.max())):
        # a. score every continuation of every live beam; at step 0 a sentence's K
        # beams are one (BOS), so it decodes one row: 1/K of that step's work
        A, R, alive = live.index.numel(), K if t else 1, live.alive
        logp, state, attn = model.decode_step(alive.tokens[:, :R, t].flatten(), state, memory)
        prefix = alive.tokens[:, :R, : t + 1].flatten(0, 1)
        step = Step(t, prefix, limits.rows if t else live.max_len, limits.first)
        logp = constraints.apply_rules(
            rules, logp, step, live.phrases, pad=pad, matched=alive.matched
        )
        V = logp.size(-1)
        # in place: a fresh (N, V) tensor per step costs page faults, not just a pass
        total = logp.view(A, R, V).add_(alive.score[:, :R, None])
        if R * V < 2 * K:  # a vocabulary too small for 2K candidates from one row
            total = F.pad(total, (0, 0, 0, K - R), value=NEG_INF)

        # b. the 2K best continuations: at least K of them do not end in EOS
        found = top_k(total.view(A, -1), 2 * K)  # (A, 2K) scores and flat indices
        how = {"options": options, "eos": eos, "sentence": limits.sentence}
        chosen = _choose(live, t, total, found, attn, **how)
        if banked:  # sentences with phrases to meet choose by banks among more candidates
            by_banks = _choose(live, t, total, found, attn, **how, phrases=live.phrases)
            chosen = constraints.pick(live.phrases.banked, by_banks, chosen)
        done, alive, parent = chosen
        state = state.select(parent.flatten())  # N = A * K rows
        live = live._replace(alive=alive, done=done)

        # e. done: K finished, or no live beam can enter the n best: no live score can rise
        # above `reachable` (log-probabilities only fall; the coverage penalty is <= 0).
        # Finished outputs that missed a constraint count for neither.
        done_score = constraints.complete(done.score, done.met)
        reachable = alive.score[:, 0] / limits.penalty
        certain = done_score[:, n - 1] >= reachable  # also true once no beam is alive
        over = live.searching & ((done_score[:, -1] > NEG_INF) | certain)
        if not over.any():  # a host sync per step, paid back by every row that leaves
            continue

        # f. finished sentences hand in their hypotheses and leave the batch
        live, left = _hand_in(live, over, results, done, shrink_step)
        if left is not None:
            if not left.numel():
                break
            rows = (left[:, None] * K + torch.arange(K, device=left.device)).flatten()
            memory, state = memory.select(left), state.select(rows)
            limits = _Limits.of(live.max_len, K, options.alpha)
    best = Beams(*(None if x is None else x[:, :n] for x in results))
    missed = constraints.missed(best.met)
    return Hypotheses(best.tokens, best.score, best.logprob, best.align, missed)


def _choose(live: _Beamed, t: int, total, found, attn, *, options, eos, sentence, phrases=None):
    """Steps c and d: the finished pool, the live beams and their parents' state rows
    (A, K), from total (A, R, V) and the `found` 2K best (scores, flat indices). Without
    `phrases`, ended ones among the top K finish and the K best others stay live; with
    them, `nmt.constraints.allocate` decides among more candidates."""
    K, V = options.beam_size, total.size(-1)
    if phrases is not None:
        choice = constraints.choose(total, found[1], live.alive, eos, phrases, K)
        found = choice.score, choice.flat
    score, beam, token = found[0], found[1] // V, found[1] % V  # (A, 2K)
    cand = _extend(live.alive, beam, t, token, score, attn)
    ends = token == eos
    if phrases is None:
        finishing = ends & (torch.arange(score.size(1), device=score.device) < K)
        alive_score, keep = score.masked_fill(ends, NEG_INF).topk(K, dim=1)
    else:
        cand = cand._replace(met=choice.met, matched=choice.matched)
        finishing, keep, alive_score = choice.finishing, choice.keep, choice.alive_score

    # c. an ended candidate joins the finished pool only if it ranks among the top K
    final = score / length_penalty(t + 1.0, options.alpha)
    if options.beta:
        final = final + coverage_penalty(cand.coverage, live.src_mask, options.beta)
    done = live.done.merge(cand._replace(score=torch.where(finishing, final, NEG_INF)), K)

    # d. the rest keep searching, and their decoder states follow them
    alive = cand.gather(keep)._replace(score=alive_score)
    # (A, K) state rows; at step 0 every beam continues its sentence's one row
    parent = beam.gather(1, keep) + sentence * K if t else sentence.expand(-1, K)
    return done, alive, parent


def _start(src, src_len, max_len, K: int, bos, pad, with_coverage: bool, phrases) -> _Beamed:
    """Every sentence searching, its K live beams BOS (one of them scored 0: they are
    one), no constraint met, its finished pool empty; every limit room for the prefix."""
    B, S, device = src.size(0), src.size(1), src.device
    max_len = max_len if phrases is None else torch.maximum(max_len, phrases.prefix_len + 1)
    tokens = src.new_full((B, K, int(max_len.max()) + 1), pad)
    tokens[:, :, 0] = bos
    score = torch.full((B, K), NEG_INF, device=device)
    coverage = torch.zeros(B, K, S if with_coverage else 0, device=device)
    state = constraints.start(phrases, K) if phrases is not None else (None, None)
    done = Beams(tokens, torch.full_like(tokens, -1), score, score.clone(), coverage, *state)
    alive = Beams(*(None if x is None else x.clone() for x in done))
    alive.score[:, 0] = 0.0
    src_mask = (torch.arange(S, device=device) < src_len[:, None].to(device))[:, None]
    searching = torch.ones(B, dtype=torch.bool, device=device)
    index = torch.arange(B, device=device)
    return _Beamed(index, searching, max_len, src_mask, alive, done, phrases)


def _extend(alive: Beams, beam: Tensor, t: int, token: Tensor, score: Tensor, attn) -> Beams:
    """The candidates (A, M, ...): the `beam`s (A, M) of `alive` with `token` appended
    at t + 1."""
    cand = alive.gather(beam)
    cand.tokens[:, :, t + 1] = token
    coverage = cand.coverage
    if attn is not None:
        A, K = alive.score.shape
        attn = attn.view(A, -1, attn.size(-1)).expand(A, K, -1)  # (A, K, S)
        cand.align[:, :, t + 1] = attn.argmax(-1).gather(1, beam)
        if coverage.size(-1):
            coverage = coverage + gather_beams(attn.float(), beam)
    return cand._replace(score=score, logprob=score, coverage=coverage)


class _Limits(NamedTuple):
    """Per-sentence constants of the A sentences in the batch."""

    rows: Tensor  # (A * K,) each row's output limit
    first: int  # the smallest limit, as a Python int (no host sync per step)
    sentence: Tensor  # (A, 1) 0 ... A - 1
    penalty: Tensor  # (A,) the length penalty at each sentence's limit: the largest

    @classmethod
    def of(cls, max_len: Tensor, K: int, alpha: float) -> _Limits:
        sentence = torch.arange(max_len.numel(), device=max_len.device)[:, None]
        penalty = length_penalty(max_len.float(), alpha)
        return cls(max_len.repeat_interleave(K), int(max_len.min()), sentence, penalty)


def _hand_in(live, over: Tensor, results, handed, shrink_step: int):
    """The `over` sentences (A,) put their `handed` (A, ...) tensors into `results` and stop
    searching. -> live without the sentences that leave the batch, and the index of those
    it kept (A', searching ones first), or None where it kept all A. They leave in groups
    of `shrink_step`: on a CPU each new row count builds new bf16 matmul kernels (oneDNN),
    so there row counts that recur across batches can save more than finished rows cost."""
    for out, part in zip(results, handed, strict=True):
        if out is not None:
            out[live.index[over]] = part[over]
    live = live._replace(searching=live.searching & ~over)
    size = -(-int(live.searching.sum()) // shrink_step) * shrink_step
    if size >= live.searching.numel():
        return live, None
    left = torch.argsort(~live.searching, stable=True)[:size]
    return _take(live, left), left


def _take(state: NamedTuple, rows: Tensor) -> NamedTuple:
    """The `rows` of every (A, ...) tensor in a (nested) NamedTuple."""
    parts = (_take(x, rows) if isinstance(x, tuple) else x if x is None else x[rows] for x in state)
    return type(state)(*parts)


def gather_beams(x: Tensor, index: Tensor) -> Tensor:
    """x (B, K, ...) and index (B, J) -> (B, J, ...)."""
    expanded = index.view(*index.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
    return x.gather(1, expanded)

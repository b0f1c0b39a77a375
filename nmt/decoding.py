"""Decoding id sequences through a model, in token-budget batches sorted by length, back
in input order: searched (`decode`: one n-best list per sequence, a call's
`SearchOptions` settled against the run's decode config) or forced (`steps`, `logprobs`,
`attention`: a given output fed step by step as search feeds its choices). The
Translator, validation while training and `nmt inspect` all decode through here. A
sequence's constraints (`nmt.constraints.Targets`) widen its output limit by the pieces
they need, and take it through beam search even at a beam of 1.

Shapes: B sentences, S source length, T output length (BOS first), V vocabulary.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from nmt.config import DecodeConfig
from nmt.constraints import Targets, pack
from nmt.corpus import inference_batches, pad_batch
from nmt.options import OptionError, SearchOptions
from nmt.plan import Plan
from nmt.scoring import BeamOptions, Hypotheses, output_limits, step_rules
from nmt.search import beam_search, sample
from nmt.tokenizer import BOS, EOS, PAD


@dataclass(frozen=True)
class Hypothesis:
    text: str
    score: float  # the search's ranking score (log-probability / length penalty)
    logprob: float  # total log-probability of the pieces and EOS under the model
    tokens: tuple[int, ...]  # target piece ids, without BOS and EOS
    alignment: tuple[int, ...] = ()  # per target piece, the source piece attended most
    # required phrases it lacks: no output within the length limit met them all (or one
    # held a forbidden phrase); such outputs rank below every one that met them
    missed: int = 0

    def alignment_pairs(self) -> str:
        """'i-j' pairs: source piece i aligned to target piece j, as fast_align writes them."""
        return " ".join(f"{i}-{j}" for j, i in enumerate(self.alignment) if i >= 0)


EMPTY = Hypothesis("", 0.0, 0.0, ())


def beam_options(options: SearchOptions, cfg: DecodeConfig) -> BeamOptions:
    """A call's options over the run's: without a beam, the run's widened to nbest."""
    return BeamOptions(
        beam_size=options.beam or max(cfg.beam_size, options.nbest),
        nbest=options.nbest,
        alpha=cfg.alpha if options.alpha is None else options.alpha,
        beta=cfg.beta,
        min_len=cfg.min_len,
        no_repeat_ngram=cfg.no_repeat_ngram,
    )


def batches(src_ids: list[list[int]], max_tokens: int, plan: Plan) -> Iterator[tuple]:
    """-> (indices, src (B, S), src_len (B,)) per batch, longest first, on the device; the
    source width rounded up to `Plan.src_multiple` (shapes that recur)."""
    for batch in inference_batches([len(ids) for ids in src_ids], max_tokens):
        src, src_len = pad_batch([src_ids[i] for i in batch], multiple=plan.src_multiple)
        yield batch, src.to(plan.device), src_len.to(plan.device)


def decode(
    model,
    src_ids: list[list[int]],
    options: SearchOptions,
    *,
    plan: Plan,
    cfg: DecodeConfig,
    targets: list[Targets | None] | None = None,
    glued: torch.Tensor | None = None,
) -> list[list[Hypothesis]]:
    """`options.nbest` hypotheses (text left empty) per sequence of source ids (pieces +
    EOS), best first, searched (a beam of 1: greedily) or drawn (`sample_temperature`)
    in batches of `max_tokens` source tokens; an empty sequence gives EMPTY. `targets`:
    each sequence's constraints, or None; `glued` (V,): the target pieces that continue
    a word (`nmt.constraints.pack`)."""
    results = [[EMPTY] * options.nbest for _ in src_ids]
    targets = targets or [None] * len(src_ids)
    if options.sampling and any(targets):
        raise OptionError("constraints, avoid and prefix need beam search, not sampling")
    beam = beam_options(options, cfg)
    specials = {"bos": BOS, "eos": EOS, "pad": PAD, "shrink_step": plan.shrink_step}
    searched = (beam_search, {**specials, "options": beam})
    groups = [(searched, list(range(len(src_ids))))]
    if options.sampling or beam.beam_size == 1:  # temperature 0: the most probable token
        rules = step_rules(beam.min_len, beam.no_repeat_ngram, bos=BOS, eos=EOS, pad=PAD)
        top_k, temperature = options.sample_top_k, options.sample_temperature
        drawn = {**specials, "temperature": temperature, "top_k": top_k, "rules": rules}
        # only beam search knows constraints: their sequences take a beam of 1
        groups = [
            ((sample, drawn), [i for i, t in enumerate(targets) if not t]),
            (searched, [i for i, t in enumerate(targets) if t]),
        ]
    with torch.inference_mode(), plan.autocast():
        for (search, how), members in groups:
            wanted = [i for i in members if len(src_ids[i]) > 1]  # empty lines stay empty
            found = batches(
                [src_ids[i] for i in wanted], options.max_tokens or cfg.max_tokens, plan
            )
            for batch, src, src_len in found:
                chosen = [wanted[j] for j in batch]
                max_len = output_limits(src_len, cfg.max_len_a, cfg.max_len_b)
                extra = {}
                if search is beam_search and any(targets[i] for i in chosen):
                    picked = [targets[i] for i in chosen]
                    extra["phrases"] = pack(picked, plan.device, glued)
                    room = [t.room if t else 0 for t in picked]
                    max_len = max_len + torch.tensor(room, device=plan.device)
                hypotheses = search(model, src, src_len, max_len=max_len, **how, **extra)
                for i, hyps in zip(chosen, _hypotheses(hypotheses, options.nbest), strict=True):
                    results[i] = hyps
    return results


def _hypotheses(found: Hypotheses, nbest: int) -> list[list[Hypothesis]]:
    """The first `nbest` of each sentence, read off the device once per batch."""
    pieces = found.pieces(EOS)
    named = (found.scores, found.logprob, found.align)
    scores, logprobs, aligns = (x[:, :nbest].tolist() for x in named)
    missed = found.missed[:, :nbest].tolist() if found.missed is not None else None
    out: list[list[Hypothesis]] = [[] for _ in pieces]
    for b, k in itertools.product(range(len(pieces)), range(nbest)):
        ids = tuple(pieces[b][k])
        align = tuple(aligns[b][k][1 : len(ids) + 1])
        lacks = missed[b][k] if missed else 0
        out[b].append(Hypothesis("", scores[b][k], logprobs[b][k], ids, align, lacks))
    return out


class Step(NamedTuple):
    t: int  # the step: it was fed tgt[:, t] and scores tgt[:, t + 1]
    logp: Tensor  # (B, V)
    attn: Tensor | None  # (B, S); None for a model without attention weights


def steps(decoder, src: Tensor, src_len: Tensor, tgt: Tensor) -> Iterator[Step]:
    """Forced decoding: tgt (B, T) BOS-first -> a `Step` for each t < T - 1; `decoder`:
    anything with search's model interface (`nmt.search`)."""
    memory, state = decoder.encode(src, src_len)
    for t in range(tgt.size(1) - 1):
        logp, state, attn = decoder.decode_step(tgt[:, t], state, memory)
        yield Step(t, logp, attn)


def _forced(src_ids, tgt_ids, max_tokens: int, plan: Plan) -> Iterator[tuple]:
    """`batches` of the sources, each with its targets padded -> (..., tgt (B, T))."""
    for batch, src, src_len in batches(src_ids, max_tokens, plan):
        yield batch, src, src_len, pad_batch([tgt_ids[i] for i in batch])[0].to(plan.device)


@torch.inference_mode()
def logprobs(decoder, src_ids, tgt_ids, *, max_tokens: int, plan: Plan) -> list[float]:
    """Each target's (BOS + pieces + EOS) total log-probability given its source."""
    found = [0.0] * len(src_ids)
    for batch, src, src_len, tgt in _forced(src_ids, tgt_ids, max_tokens, plan):
        total = torch.zeros(tgt.size(0), device=plan.device)
        with plan.autocast():
            for step in steps(decoder, src, src_len, tgt):
                gold = tgt[:, step.t + 1]
                picked = step.logp.gather(1, gold[:, None]).squeeze(1)
                total += picked.masked_fill(gold == PAD, 0.0)
        for i, value in zip(batch, total.tolist(), strict=True):
            found[i] = value
    return found


@torch.inference_mode()
def attention(decoder, src_ids, tgt_ids, *, max_tokens: int, plan: Plan) -> list[Tensor]:
    """Per pair, (T - 1, S) fp32 on the CPU: row t what output t + 1 attended to over the
    source; empty (0, 0) for a model without attention weights."""
    found = [torch.empty(0, 0)] * len(src_ids)
    for batch, src, src_len, tgt in _forced(src_ids, tgt_ids, max_tokens, plan):
        with plan.autocast():  # each step's attention is its own (graphs: a copy)
            rows = [
                None if s.attn is None else s.attn.float()
                for s in steps(decoder, src, src_len, tgt)
            ]
        if any(attn is None for attn in rows):
            continue
        weights = torch.stack(rows, 1).cpu()  # (B, T - 1, S)
        for row, i in enumerate(batch):
            found[i] = weights[row, : len(tgt_ids[i]) - 1, : len(src_ids[i])]
    return found

"""Decoding id sequences: sorted by length into token-budget batches, padded, searched,
and returned in input order, one n-best list per sequence. `nmt.translate` (text in,
text out) and `nmt.training.validation` (ids, while training) both decode through
`decode`, which settles a call's `SearchOptions` against the run's decode config.
A sequence's constraints (`nmt.constraints.Targets`) widen its output limit by the
pieces they need, and take it through beam search even at a beam of 1.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

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
    searched = (beam_search, {**specials, "options": beam, "glued": glued})
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
            lengths = [len(src_ids[i]) for i in members]
            for batch in inference_batches(lengths, options.max_tokens or cfg.max_tokens):
                batch = [members[j] for j in batch if lengths[j] > 1]  # empty lines stay empty
                if not batch:
                    continue
                found = _search(model, search, how, [src_ids[i] for i in batch], plan, cfg,
                                [targets[i] for i in batch])  # fmt: skip
                for i, hyps in zip(batch, _hypotheses(found, options.nbest), strict=True):
                    results[i] = hyps
    return results


def _search(model, search, how: dict, src_ids, plan: Plan, cfg: DecodeConfig, targets):
    """One batch through `search`; its sequences' constraints widen their limits."""
    src, src_len = pad_batch(src_ids, multiple=plan.src_multiple)
    src, src_len = src.to(plan.device), src_len.to(plan.device)
    max_len = output_limits(src_len, cfg.max_len_a, cfg.max_len_b)
    if search is beam_search:
        glued, how = how["glued"], {k: v for k, v in how.items() if k != "glued"}
        if any(targets):
            room = torch.tensor([t.room if t else 0 for t in targets], device=plan.device)
            how["phrases"] = pack(targets, plan.device, glued)
            max_len = max_len + room
    return search(model, src, src_len, max_len=max_len, **how)


def _hypotheses(found: Hypotheses, nbest: int) -> list[list[Hypothesis]]:
    """The first `nbest` of each sentence, read off the device once per batch."""
    pieces = found.pieces(EOS)
    scores, logprobs, aligns = (
        x[:, :nbest].tolist() for x in (found.scores, found.logprob, found.align)
    )
    missed = found.missed[:, :nbest].tolist() if found.missed is not None else None
    out: list[list[Hypothesis]] = [[] for _ in pieces]
    for b, k in itertools.product(range(len(pieces)), range(nbest)):
        ids = tuple(pieces[b][k])
        align = tuple(aligns[b][k][1 : len(ids) + 1])
        lacks = missed[b][k] if missed else 0
        out[b].append(Hypothesis("", scores[b][k], logprobs[b][k], ids, align, lacks))
    return out

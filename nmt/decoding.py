"""Decoding id sequences: sorted by length into token-budget batches, padded, searched,
and returned in input order, one n-best list per sequence. `nmt.translate` (text in,
text out) and `nmt.training.validation` (ids, while training) both decode through
`decode`, which settles a call's `SearchOptions` against the run's decode config.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from nmt.config import DecodeConfig
from nmt.corpus import inference_batches, pad_batch
from nmt.options import SearchOptions
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
    model, src_ids: list[list[int]], options: SearchOptions, *, plan: Plan, cfg: DecodeConfig
) -> list[list[Hypothesis]]:
    """`options.nbest` hypotheses (text left empty) per sequence of source ids (pieces +
    EOS), best first, searched (a beam of 1: greedily) or drawn (`sample_temperature`)
    in batches of `max_tokens` source tokens; an empty sequence gives EMPTY."""
    results = [[EMPTY] * options.nbest for _ in src_ids]
    lengths = [len(ids) for ids in src_ids]
    beam = beam_options(options, cfg)
    specials = {"bos": BOS, "eos": EOS, "pad": PAD, "shrink_step": plan.shrink_step}
    drawn = options.sampling or beam.beam_size == 1
    if drawn:  # temperature 0: the most probable token
        rules = step_rules(beam.min_len, beam.no_repeat_ngram, bos=BOS, eos=EOS, pad=PAD)
        top_k, temperature = options.sample_top_k, options.sample_temperature
        specials.update(temperature=temperature, top_k=top_k, rules=rules)
    else:
        specials.update(options=beam)
    search = sample if drawn else beam_search
    with torch.inference_mode(), plan.autocast():
        for batch in inference_batches(lengths, options.max_tokens or cfg.max_tokens):
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
    scores, logprobs, aligns = (
        x[:, :nbest].tolist() for x in (found.scores, found.logprob, found.align)
    )
    out: list[list[Hypothesis]] = [[] for _ in pieces]
    for b, k in itertools.product(range(len(pieces)), range(nbest)):
        ids = tuple(pieces[b][k])
        align = tuple(aligns[b][k][1 : len(ids) + 1])
        out[b].append(Hypothesis("", scores[b][k], logprobs[b][k], ids, align))
    return out

"""Translating text with trained models: raw text in, detokenized text out.

A `Translator` holds a model (or an `Ensemble`), its two tokenizers, its config and a
plan, and always returns one result per input line, in input order (`nmt.decoding`):
empty input gives an empty output, over-long input is translated from its truncated
start (`nmt.text.documents` cuts long lines into windows first). A line may carry
`Constraints` (target text): they become pieces here, each phrase also in the form
that starts a sentence (its first letter upper case) as one more way to meet or
break it. Loading and wrapping the models is `nmt.loading`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from nmt import decoding, loading
from nmt.config import Config
from nmt.constraints import ATTACHES, CONTINUES, STARTS, Targets
from nmt.decoding import Hypothesis, decode
from nmt.ensemble import Ensemble
from nmt.options import Constraints, OptionError, SearchOptions
from nmt.plan import Plan, plan_for
from nmt.tokenizer import BOS, EOS, PAD, UNK, Tokenizer

__all__ = ["Constraints", "Hypothesis", "Translator"]
MAX_PHRASE_PIECES = 32  # a longer phrase costs (pieces ** 2) work per candidate and step

log = logging.getLogger(__name__)


class Translator:
    def __init__(
        self, model, tokenizers: tuple[Tokenizer, Tokenizer], cfg: Config, plan: Plan | None = None
    ):
        """`model`: a Seq2Seq or an Ensemble of them, in eval mode, on the plan's device.
        `plan`: an inference plan (`nmt.plan.plan_for(..., training=False)`); by default
        fp32 on the model's device with the model's own weights, which may still change.
        Search runs `self.decoder`: the model, or the wrappers the plan asks for."""
        members = model.models if isinstance(model, Ensemble) else [model]
        device = next(members[0].parameters()).device
        self.model, self.cfg, self.src_tok, self.tgt_tok = model, cfg, *tokenizers
        self.plan = plan or plan_for(device, "fp32", training=False, model=cfg.model)
        self.device = self.plan.device
        self.decoder = loading.wrap(model, self.plan)

    @classmethod
    def load(cls, paths: str | Path | list, **options) -> Translator:
        """`nmt.loading.load`'s models: device and precision ("auto" by default), graphs,
        decode.* overrides."""
        return cls(*loading.load(paths, **options))

    def translate(
        self, lines: list[str], *, constraints: list[Constraints | None] | None = None, **options
    ) -> list[list[Hypothesis]]:
        """The `nbest` best hypotheses of each line, best first, in input order.
        `options`: `nmt.options.SearchOptions`' (beam, nbest, alpha, max_tokens,
        sample_temperature, sample_top_k), checked before any work. `constraints`: each
        line's, or None (a beam search then; `Hypothesis.missed` flags an output that
        lacks a required phrase, and a warning counts them)."""
        if constraints is not None and len(constraints) != len(lines):
            raise ValueError(f"{len(lines)} lines but {len(constraints)} constraints")
        stream = self.translate_stream(
            lines, constraints=constraints, chunk_lines=max(len(lines), 1), **options
        )
        return list(stream)

    def translate_stream(
        self,
        lines: Iterable[str],
        *,
        constraints: Iterable[Constraints | None] | None = None,
        chunk_lines: int = 10_000,
        **options,
    ) -> Iterator[list[Hypothesis]]:
        """`translate` over an iterable of any length, holding one chunk in memory;
        `constraints` an iterable beside `lines`."""
        if isinstance(lines, str):  # would translate it character by character
            raise TypeError("translate takes a list of lines, not a str: translate([text])")
        search = SearchOptions(**options)
        lines, truncated, missed = iter(lines), 0, 0
        given = iter(constraints) if constraints is not None else itertools.repeat(None)
        while chunk := list(itertools.islice(lines, chunk_lines)):
            src_ids, count = self._encode(chunk)
            truncated += count
            targets = [self.targets(c) for c in itertools.islice(given, len(chunk))]
            if len(targets) < len(chunk):
                raise ValueError("fewer constraints than lines: one (or None) per line")
            found = decode(
                self.decoder, src_ids, search, plan=self.plan, cfg=self.cfg.decode,
                targets=targets, glued=self._glued if any(targets) else None,
            )  # fmt: skip
            missed += sum(hyps[0].missed > 0 for hyps in found)
            texts = iter(self.tgt_tok.decode([h.tokens for hyps in found for h in hyps]))
            for line, hyps in zip(chunk, found, strict=True):
                hyps = [dataclasses.replace(h, text=next(texts)) for h in hyps]
                if self.cfg.decode.replace_unk:
                    hyps = [self._replace_unk(line, h) for h in hyps]
                yield hyps
        self._warn_truncated(truncated)
        if missed:
            log.warning(
                "%d lines lack a required phrase: no translation within the length limit met"
                " them all (or one held a forbidden phrase); their Hypothesis.missed says how"
                " many",
                missed,
            )

    def targets(self, constraints: Constraints | None) -> Targets | None:
        """A line's `Constraints` in target pieces: each phrase as given and with its
        first letter upper case. A phrase the model cannot write (a piece of it
        unknown) is refused, except a forbidden one, which it cannot produce anyway."""
        if constraints is not None and not isinstance(constraints, Constraints):
            raise TypeError(f"constraints are nmt.options.Constraints, got {constraints!r}")
        if not constraints:
            return None
        include = tuple(
            tuple(ids for p in _forms(choice) if (ids := self._pieces(p, must=p in choice)))
            for choice in constraints.include
        )
        avoid = tuple(ids for p in _forms(constraints.avoid) if (ids := self._pieces(p)))
        prefix = self._pieces(constraints.prefix, must=True) if constraints.prefix else ()
        return Targets(include, avoid, prefix, constraints.prefix[-1:].isspace())

    @functools.cached_property
    def _glued(self) -> torch.Tensor:
        """(V,) each target piece's `nmt.constraints` code: without SentencePiece's word
        mark a piece attaches to the one before, and with a letter or digit first it
        continues its word; the control symbols (EOS among them) start none."""
        ids = range(len(self.tgt_tok))
        pieces, control = self.tgt_tok.id_to_piece(list(ids)), (PAD, UNK, BOS, EOS)
        return torch.tensor(
            [
                STARTS if p.startswith("\u2581") or i in control
                else CONTINUES if p[:1].isalnum() else ATTACHES
                for i, p in zip(ids, pieces, strict=True)
            ],
            dtype=torch.int8,
        )  # fmt: skip

    def _pieces(self, phrase: str, must: bool = False) -> tuple[int, ...]:
        """`phrase`'s target pieces; () for one with an unknown piece, unless `must`."""
        ids = tuple(self.tgt_tok.encode([phrase])[0])
        if not ids and must:
            raise OptionError(f"{phrase!r} has nothing the model can write")
        if UNK in ids and must:
            raise OptionError(f"the model cannot write {phrase!r}: characters it never saw")
        if len(ids) > MAX_PHRASE_PIECES:
            raise OptionError(f"{phrase!r} is {len(ids)} pieces, over {MAX_PHRASE_PIECES}")
        return () if UNK in ids else ids

    def score(self, src_lines: list[str], tgt_lines: list[str]) -> list[float]:
        """Forced decoding: the model's total log-probability of each target (pieces + EOS)."""
        if len(src_lines) != len(tgt_lines):
            raise ValueError(f"{len(src_lines)} sources but {len(tgt_lines)} targets")
        tgt_ids = [[BOS, *ids, EOS] for ids in self.tgt_tok.encode(tgt_lines)]
        return decoding.logprobs(self.decoder, self._encode(src_lines)[0], tgt_ids, **self._forced)

    def attention(self, src_lines: list[str], outputs: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """The attention the model pays while it writes each output (piece ids without BOS
        and EOS, as `Hypothesis.tokens`) for its source line: (T + 1, S + 1) per line, row
        t what output piece t (the last row: EOS) attended to over the source pieces and
        EOS; rows sum to one. Decoded as search decoded it, so the argmax of each row is
        the hypothesis' alignment. Empty for a model without attention weights."""
        if len(src_lines) != len(outputs):
            raise ValueError(f"{len(src_lines)} sources but {len(outputs)} outputs")
        tgt_ids = [[BOS, *ids, EOS] for ids in outputs]
        return decoding.attention(self.decoder, self._encode(src_lines)[0], tgt_ids, **self._forced)

    @property
    def _forced(self) -> dict:
        return {"max_tokens": self.cfg.decode.max_tokens, "plan": self.plan}

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Source piece ids + EOS, truncated to the model's length limit."""
        ids, truncated = self._encode(lines)
        self._warn_truncated(truncated)
        return ids

    def _encode(self, lines: list[str]) -> tuple[list[list[int]], int]:
        limit = self.cfg.data.max_len
        ids = self.src_tok.encode([line.strip() for line in lines])
        return [x[:limit] + [EOS] for x in ids], sum(len(x) > limit for x in ids)

    def _warn_truncated(self, count: int) -> None:
        if count:
            n = self.cfg.data.max_len
            log.warning("%d input lines exceed %d pieces: translated their first %d", count, n, n)

    def _replace_unk(self, line: str, hyp: Hypothesis) -> Hypothesis:
        """Each <unk> output piece becomes the source piece it attended to most."""
        if UNK not in hyp.tokens or not hyp.alignment:
            return hyp
        source = self.src_tok.pieces(line.strip())
        pieces = self.tgt_tok.id_to_piece(list(hyp.tokens))
        for j, (token, i) in enumerate(zip(hyp.tokens, hyp.alignment, strict=True)):
            if token == UNK and 0 <= i < len(source):
                pieces[j] = source[i]
        return dataclasses.replace(hyp, text="".join(pieces).replace("\u2581", " ").strip())


def _forms(phrases) -> list[str]:
    """Each phrase, and after it its form at the start of a sentence where that differs."""
    starts = (p[:1].upper() + p[1:] for p in phrases)
    return list(dict.fromkeys(x for pair in zip(phrases, starts, strict=True) for x in pair))

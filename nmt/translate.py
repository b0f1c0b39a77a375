"""Translating text with a trained model: raw text in, detokenized text out.

A `Translator` wraps a model and its two tokenizers. It sorts sentences by
length into token-budget batches and restores the input order, and it always
returns exactly one result per input line: empty input gives an empty output,
over-long input is translated from its truncated start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt import checkpoint
from nmt.config import Config
from nmt.data import pad_batch, sorted_batches
from nmt.model import Seq2Seq
from nmt.search import beam_search, greedy, output_limits
from nmt.tokenizer import BOS, EOS, PAD, Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hypothesis:
    text: str
    score: float  # log-probability, divided by the length penalty under beam search
    tokens: tuple[int, ...]  # target piece ids, without BOS and EOS


class Translator:
    def __init__(
        self,
        model: Seq2Seq,
        tokenizers: tuple[Tokenizer, Tokenizer],
        cfg: Config,
        *,
        device: str | torch.device = "cpu",
    ):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.src_tok, self.tgt_tok = tokenizers

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> Translator:
        """From a checkpoint file, or a run directory (its best.pt, else last.pt)."""
        path = Path(path)
        if path.is_dir():
            path = next(
                (p for p in (path / "best.pt", path / "last.pt") if p.exists()), path / "best.pt"
            )
        cfg, model, tokenizers, _ = checkpoint.load(path, device)
        return cls(model, tokenizers, cfg, device=device)

    def translate(
        self,
        lines: list[str],
        *,
        beam: int | None = None,
        alpha: float | None = None,
        max_tokens: int | None = None,
    ) -> list[Hypothesis]:
        """One hypothesis per line, in input order; beam 1 is greedy search."""
        beam = self.cfg.decode.beam_size if beam is None else beam
        alpha = self.cfg.decode.alpha if alpha is None else alpha
        max_tokens = max_tokens or self.cfg.decode.max_tokens
        src_ids = self.encode(lines)
        results: list[Hypothesis | None] = [None] * len(lines)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for batch in sorted_batches([len(ids) for ids in src_ids], max_tokens):
                batch = [i for i in batch if len(src_ids[i]) > 1]  # empty lines stay empty
                if batch:
                    hyps = self._decode([src_ids[i] for i in batch], beam, alpha)
                    for i, hyp in zip(batch, hyps, strict=True):
                        results[i] = hyp
        self.model.train(was_training)
        return [hyp or Hypothesis("", 0.0, ()) for hyp in results]

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Source piece ids + EOS, truncated to the model's length limit."""
        limit = self.cfg.data.max_len
        ids = self.src_tok.encode([line.strip() for line in lines])
        long = sum(len(x) > limit for x in ids)
        if long:
            log.warning("%d input lines exceed %d pieces and were truncated", long, limit)
        return [x[:limit] + [EOS] for x in ids]

    def _decode(self, src_ids: list[list[int]], beam: int, alpha: float) -> list[Hypothesis]:
        src, src_len = (t.to(self.device) for t in pad_batch(src_ids))
        decode = self.cfg.decode
        max_len = output_limits(src_len, decode.max_len_a, decode.max_len_b)
        specials = dict(bos=BOS, eos=EOS, pad=PAD)
        if beam == 1:
            tokens, scores = greedy(self.model, src, src_len, max_len=max_len, **specials)
        else:
            tokens, scores = beam_search(
                self.model, src, src_len, max_len=max_len, beam_size=beam, alpha=alpha, **specials
            )
            tokens, scores = tokens[:, 0], scores[:, 0]
        ids = [_strip(row) for row in tokens.tolist()]
        texts = self.tgt_tok.decode(ids)
        scores = scores.tolist()
        return [Hypothesis(*fields) for fields in zip(texts, scores, map(tuple, ids), strict=True)]


def _strip(row: list[int]) -> list[int]:
    """BOS-first ids -> the pieces before EOS."""
    row = row[1:]
    return row[: row.index(EOS)] if EOS in row else [i for i in row if i != PAD]

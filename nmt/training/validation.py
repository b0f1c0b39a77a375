"""Validation while training: loss and perplexity by teacher forcing, and the BLEU of
greedy translations, on the val split tokenized once at the start of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from sacrebleu.metrics import BLEU

from nmt.config import Config
from nmt.corpus import collate, epoch_batches
from nmt.decoding import decode
from nmt.options import SearchOptions
from nmt.plan import Plan
from nmt.tokenizer import EOS, PAD, Tokenizer


@dataclass(frozen=True)
class ValidSet:
    src_ids: list[list[int]]  # pieces + EOS, cut to data.max_len as translation cuts them
    tgt_ids: list[list[int]]  # BOS + pieces + EOS
    refs: list[str]  # the target text

    @classmethod
    def of(cls, ds: datasets.Dataset, max_len: int) -> ValidSet:
        """From a tokenized split (`nmt.corpus.tokenize`)."""
        src = [ids[:-1][:max_len] + [EOS] for ids in ds["src_ids"][:]]
        return cls(src, ds["tgt_ids"][:], ds["tgt"][:])


@torch.no_grad()
def validate(model, valid: ValidSet, tgt_tok: Tokenizer, plan: Plan, cfg: Config) -> dict[str, Any]:
    """-> loss per target token and perplexity (no label smoothing), and greedy BLEU.
    `plan`: an inference plan for the model's device; the model is left in its mode."""
    was_training = model.training
    model.eval()
    budget, lengths = cfg.train.valid_batch_tokens, [len(x) for x in valid.src_ids]
    loss_sum, count = 0.0, 0
    for batch in epoch_batches(lengths, [len(x) for x in valid.tgt_ids], budget, 0, 0):
        part = collate([valid.src_ids[i] for i in batch], [valid.tgt_ids[i] for i in batch])
        part = plan.to_device(part)
        parts = (part["src"], part["src_len"], part["tgt_in"], part["tgt_out"])
        loss_sum += float(model.loss(*parts, kernels=plan.kernels))
        count += int((part["tgt_out"] != PAD).sum())
    greedy = SearchOptions(beam=1, max_tokens=budget)
    found = decode(model, valid.src_ids, greedy, plan=plan, cfg=cfg.decode)
    hyps = tgt_tok.decode([hyps[0].tokens for hyps in found])
    model.train(was_training)
    loss, (score, _) = loss_sum / max(count, 1), bleu(hyps, valid.refs)
    ppl = math.exp(min(loss, 50))
    return {"loss": round(loss, 4), "ppl": round(ppl, 2), "bleu": round(score, 2)}


def bleu(hyps: list[str], refs: list[str]) -> tuple[float, str]:
    """Detokenized, cased corpus BLEU (13a) -> (score, sacrebleu signature)."""
    metric = BLEU()
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())

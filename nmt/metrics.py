"""Corpus scores through SacreBLEU's own classes, always with their signatures."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF


def bleu(hyps: list[str], refs: list[str]) -> tuple[float, str]:
    """Detokenized, cased corpus BLEU (13a) -> (score, sacrebleu signature)."""
    metric = BLEU()
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())


def chrf(hyps: list[str], refs: list[str]) -> tuple[float, str]:
    metric = CHRF()
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())

"""Validation BLEU through SacreBLEU's own class, with its signature (reports: nmt.report)."""

from __future__ import annotations

from sacrebleu.metrics import BLEU


def bleu(hyps: list[str], refs: list[str]) -> tuple[float, str]:
    """Detokenized, cased corpus BLEU (13a) -> (score, sacrebleu signature)."""
    metric = BLEU()
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())

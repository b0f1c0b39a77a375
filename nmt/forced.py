"""Forced decoding: a given output fed to the decoder step by step, as search feeds its
choices, for the model's log-probability of it and the attention at each step.
`Translator.score` and `Translator.attention` run it; `nmt inspect` runs its gate
recorder through `steps`.

Shapes: B sentences, S source length, T output length (BOS first), V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from nmt.corpus import inference_batches, pad_batch
from nmt.plan import Plan
from nmt.tokenizer import PAD


class Step(NamedTuple):
    t: int  # the step: it was fed tgt[:, t] and scores tgt[:, t + 1]
    logp: Tensor  # (B, V)
    attn: Tensor | None  # (B, S); None for a model without attention weights


def steps(decoder, src: Tensor, src_len: Tensor, tgt: Tensor) -> Iterator[Step]:
    """tgt (B, T) BOS-first -> a `Step` for each t < T - 1; `decoder`: anything with
    search's model interface (`nmt.search`)."""
    memory, state = decoder.encode(src, src_len)
    for t in range(tgt.size(1) - 1):
        logp, state, attn = decoder.decode_step(tgt[:, t], state, memory)
        yield Step(t, logp, attn)


def batches(
    src_ids: list[list[int]], tgt_ids: list[list[int]], *, max_tokens: int, plan: Plan
) -> Iterator[tuple[list[int], Tensor, Tensor, Tensor]]:
    """-> (indices, src (B, S), src_len (B,), tgt (B, T)) per batch on the device, the
    source padded as search pads it (`Plan.src_multiple`: shapes that recur)."""
    for batch in inference_batches([len(ids) for ids in src_ids], max_tokens):
        sources = pad_batch([src_ids[i] for i in batch], multiple=plan.src_multiple)
        src, src_len = (t.to(plan.device) for t in sources)
        yield batch, src, src_len, pad_batch([tgt_ids[i] for i in batch])[0].to(plan.device)


@torch.inference_mode()
def logprobs(decoder, src_ids, tgt_ids, *, max_tokens: int, plan: Plan) -> list[float]:
    """Each target's (BOS + pieces + EOS) total log-probability given its source."""
    found = [0.0] * len(src_ids)
    for batch, src, src_len, tgt in batches(src_ids, tgt_ids, max_tokens=max_tokens, plan=plan):
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
    for batch, src, src_len, tgt in batches(src_ids, tgt_ids, max_tokens=max_tokens, plan=plan):
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

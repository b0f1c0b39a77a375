"""Greedy and batched beam search over any model with `encode` and `decode_step`.

Shapes: B sentences, K beams, N = B * K decoder rows, L = longest output + 1
(BOS first), V vocabulary size. The model's memory and state only need
`.select(rows)`; search never looks inside them and never imports the model.
Each sentence has its own output length limit (`max_len`, (B,)); at that limit
every hypothesis is forced to end with EOS.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEG_INF = float("-inf")


def length_penalty(length: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT's ((5 + length) / 6) ** alpha; alpha = 0 ranks by raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


def output_limits(src_len: Tensor, a: float, b: int) -> Tensor:
    """Per-sentence output limit a * source length + b, at least 1, in pieces incl. EOS."""
    return (src_len.float() * a + b).long().clamp(min=1)


@torch.no_grad()
def greedy(
    model, src: Tensor, src_len: Tensor, *, max_len: Tensor, bos: int, eos: int, pad: int
) -> tuple[Tensor, Tensor]:
    """-> tokens (B, L) BOS-first, padded after EOS, and their log-probabilities (B,)."""
    B, steps = src.size(0), int(max_len.max())
    memory, state = model.encode(src, src_len)
    tokens = src.new_full((B, steps + 1), pad)
    tokens[:, 0] = bos
    scores = torch.zeros(B, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    for t in range(steps):
        logp, state = model.decode_step(tokens[:, t], state, memory)
        logp = _mask_specials(logp, t, max_len, eos=eos, pad=pad, bos=bos)
        best, token = logp.max(dim=-1)
        tokens[:, t + 1] = token.masked_fill(finished, pad)
        scores += best.masked_fill(finished, 0.0)
        finished |= token == eos
        if finished.all():  # a host sync per step, cheaper than decoding to the limit
            break
    return tokens, scores


@torch.no_grad()
def beam_search(
    model,
    src: Tensor,
    src_len: Tensor,
    *,
    max_len: Tensor,
    beam_size: int,
    alpha: float = 0.0,
    bos: int,
    eos: int,
    pad: int,
) -> tuple[Tensor, Tensor]:
    """Returns the K best hypotheses per sentence, best first.

    tokens: (B, K, L) BOS-first ids, padded after EOS; scores: (B, K) total
    log-probability divided by `length_penalty(length, alpha)`, where length
    counts EOS but not BOS.
    """
    B, K, steps = src.size(0), beam_size, int(max_len.max())
    device = src.device
    batch_offset = torch.arange(B, device=device)[:, None] * K  # (B, 1)
    memory, state = model.encode(src, src_len)
    rows = torch.arange(B, device=device).repeat_interleave(K)
    memory, state = memory.select(rows), state.select(rows)  # N = B * K rows

    alive = src.new_full((B, K, steps + 1), pad)
    alive[:, :, 0] = bos
    alive_score = torch.full((B, K), NEG_INF, device=device)
    alive_score[:, 0] = 0.0  # all beams start identical: keep one
    done = alive.clone()
    done_score = torch.full((B, K), NEG_INF, device=device)
    best_possible_penalty = length_penalty(max_len.float(), alpha)  # (B,)

    for t in range(steps):
        # a. score every continuation of every live beam
        logp, state = model.decode_step(alive[:, :, t].flatten(), state, memory)
        V = logp.size(-1)
        logp = _mask_specials(logp, t, max_len.repeat_interleave(K), eos=eos, pad=pad, bos=bos)
        total = alive_score[:, :, None] + logp.view(B, K, V)  # (B, K, V)

        # b. 2K candidates guarantee K that do not end in EOS
        cand_score, flat = total.view(B, K * V).topk(2 * K, dim=1)  # (B, 2K)
        beam, token = flat // V, flat % V
        cand = gather_beams(alive, beam)  # (B, 2K, L)
        cand[:, :, t + 1] = token
        ends = token == eos

        # c. an ended candidate is finished only if it ranks among the top K
        ranks = torch.arange(2 * K, device=device)
        normalized = cand_score / length_penalty(t + 1.0, alpha)
        finished = torch.where(ends & (ranks < K), normalized, NEG_INF)
        done, done_score, _ = top_k(
            torch.cat([done, cand], 1), torch.cat([done_score, finished], 1), K
        )

        # d. the rest keep searching, and their decoder states follow them
        alive, alive_score, keep = top_k(cand, cand_score.masked_fill(ends, NEG_INF), K)
        state = state.select((beam.gather(1, keep) + batch_offset).flatten())

        # e. log-probs only fall, so no live beam can end above score / best penalty;
        # stop once none can beat the K-th finished one (same result, less work)
        if (done_score[:, -1] >= alive_score[:, 0] / best_possible_penalty).all():
            break
    return done, done_score


def _mask_specials(
    logp: Tensor, t: int, max_len: Tensor, *, eos: int, pad: int, bos: int
) -> Tensor:
    """logp (N, V): PAD and BOS are never generated; rows at their limit must emit EOS."""
    logp = logp.clone()
    logp[:, [pad, bos]] = NEG_INF
    at_limit = (t >= max_len - 1)[:, None]  # (N, 1)
    not_eos = torch.arange(logp.size(-1), device=logp.device) != eos  # (V,)
    return logp.masked_fill(at_limit & not_eos, NEG_INF)


def gather_beams(x: Tensor, index: Tensor) -> Tensor:
    """x (B, K, ...) and index (B, J) -> (B, J, ...)."""
    expanded = index.view(*index.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
    return x.gather(1, expanded)


def top_k(seqs: Tensor, scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The k best (sequence, score) pairs per sentence, best first, and their index."""
    best, index = scores.topk(k, dim=1)
    return gather_beams(seqs, index), best, index

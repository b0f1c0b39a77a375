"""The output layer and the training loss in one pass over row chunks.

Unfused, a batch's logits (rows x vocabulary) are written, cast to fp32, read by
log-softmax, written again, and in backward the same again plus a zero-filled
gradient: on a CPU the log-softmax passes alone took 8% of a bf16 training step,
the casts and fills more. Here each chunk of rows goes output layer -> fp32
logits -> loss and its gradient while the chunk is in cache, and the gradients
of the inputs, the weight and the bias are formed in the same pass: the loss is
the graph's last node, so backward only scales them by the incoming gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _ProjectedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden, weight, bias, target, ignore_index, smoothing, dtype, chunk_rows, wants_grad
    ):
        vocab = weight.size(0)
        ctx.dtypes = hidden.dtype, weight.dtype, bias.dtype
        hidden, weight_c, bias_c = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
        exact = torch.promote_types(dtype, torch.float32)  # the loss's own dtype
        total = torch.zeros((), dtype=exact, device=hidden.device)
        if wants_grad:  # validation needs only the loss
            dhidden = torch.empty_like(hidden, dtype=exact)
            dweight = torch.zeros_like(weight, dtype=exact)
            dbias = torch.zeros_like(bias, dtype=exact)
        for start in range(0, hidden.size(0), chunk_rows):
            h, t = hidden[start : start + chunk_rows], target[start : start + chunk_rows]
            logits = torch.addmm(bias_c, h, weight_c.t()).to(exact)  # (rows, V)
            keep = (t != ignore_index).to(exact)[:, None]
            safe_t = t.clamp(min=0)[:, None]
            lse = logits.logsumexp(-1, keepdim=True)
            picked = logits.gather(1, safe_t)
            loss = lse - (1 - smoothing) * picked - smoothing * logits.mean(-1, keepdim=True)
            total += (loss * keep).sum()
            if not wants_grad:
                continue
            # d loss / d logits = softmax - (1 - eps) onehot - eps / V, zero on ignored rows
            grad = logits.sub_(lse).exp_().sub_(smoothing / vocab)
            grad.scatter_add_(1, safe_t, torch.full_like(picked, smoothing - 1)).mul_(keep)
            grad = grad.to(dtype)
            dhidden[start : start + chunk_rows] = grad @ weight_c
            dweight += grad.t() @ h
            dbias += grad.sum(0, dtype=exact)
        if wants_grad:
            ctx.save_for_backward(dhidden, dweight, dbias)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total):
        dhidden, dweight, dbias = ctx.saved_tensors
        hidden_t, weight_t, bias_t = ctx.dtypes
        return (
            (dhidden * grad_total).to(hidden_t),
            (dweight * grad_total).to(weight_t),
            (dbias * grad_total).to(bias_t),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def projected_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor,
    target: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float = 0.0,
    dtype: torch.dtype | None = None,
    chunk_rows: int | None = None,
) -> Tensor:
    """Summed cross-entropy of `hidden @ weight.T + bias` against `target`, in fp32
    (float64 for float64 inputs).

    hidden (M, D), weight (V, D), bias (V,), target (M,) -> a scalar: what
    `F.cross_entropy(F.linear(hidden, weight, bias).float(), target, reduction="sum",
    ignore_index=..., label_smoothing=...)` gives, without the (M, V) logits in memory.
    Differentiable once, the loss being the last node of the graph. `dtype`: the
    one the output layer's products run in (autocast's under AMP; default hidden's).
    """
    # chunks of ~8 MB of fp32 logits on a CPU (cache-sized); larger on a GPU (fewer launches)
    elements = 2**26 if hidden.is_cuda else 2**21
    chunk_rows = chunk_rows or max(1, elements // weight.size(0))
    # forward runs with grad mode off, and ctx.needs_input_grad ignores torch.no_grad()
    wants_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (hidden, weight, bias))
    dtype = dtype or hidden.dtype
    return _ProjectedCrossEntropy.apply(
        hidden, weight, bias, target, ignore_index, label_smoothing, dtype, chunk_rows, wants_grad
    )

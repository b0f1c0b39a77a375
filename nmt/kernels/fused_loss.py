"""The output layer and the training loss in one pass over row chunks.

Unfused, a batch's logits are written, cast to fp32, read by log-softmax and written again,
and as much again in backward (docs/benchmarks.md, CPU training). Here each chunk of rows
goes output layer -> fp32 logits -> loss and its gradient while it is in cache; the
gradients of the inputs, weight and bias are formed in the forward call, one product per
group of chunks: the loss is the graph's last node, so backward only scales them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _Options(NamedTuple):
    ignore_index: int
    smoothing: float
    dtype: torch.dtype  # the products'
    chunk_rows: int
    group_rows: int
    wants_grad: bool


class _ProjectedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, options: _Options):
        ignore_index, smoothing, dtype, chunk_rows, group_rows, wants_grad = options
        vocab = weight.size(0)
        ctx.dtypes = hidden.dtype, weight.dtype, bias.dtype
        hidden, weight_c, bias_c = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
        exact = torch.promote_types(dtype, torch.float32)  # the loss's own dtype
        ctx.used = False
        total = torch.zeros((), dtype=exact, device=hidden.device)
        dhidden, dweight, dbias = [], None, None
        for group_start in range(0, hidden.size(0), group_rows):
            group = hidden[group_start : group_start + group_rows]
            group_target = target[group_start : group_start + group_rows]
            # the group's d loss / d logits, for the weight gradient's product over all its rows
            dlogits = group.new_empty((group.size(0), vocab)) if wants_grad else None
            for start in range(0, group.size(0), chunk_rows):
                rows = slice(start, start + chunk_rows)
                t = group_target[rows]
                # (rows, V); in fp32 straight into the gradient's place, worked on there
                into = dlogits[rows] if wants_grad and dtype == exact else None
                logits = torch.addmm(bias_c, group[rows], weight_c.t(), out=into).to(exact)
                keep = (t != ignore_index).to(exact)[:, None]
                safe_t = t.clamp(min=0)[:, None]
                lse = logits.logsumexp(-1, keepdim=True)
                picked = logits.gather(1, safe_t)
                loss = lse - (1 - smoothing) * picked - smoothing * logits.mean(-1, keepdim=True)
                total += (loss * keep).sum()
                if not wants_grad:  # validation needs only the loss
                    continue
                # d loss / d logits = softmax - (1 - eps) onehot - eps / V, zero on ignored rows
                grad = logits.sub_(lse).exp_().sub_(smoothing / vocab)
                grad.scatter_add_(1, safe_t, torch.full_like(picked, smoothing - 1)).mul_(keep)
                if into is None:
                    dlogits[rows] = grad
            if not wants_grad:
                continue
            # One product per group, not per chunk: the (V, D) weight gradient is written
            # once, and a chunk's few rows are too short a sum for the matrix kernel.
            dhidden.append((dlogits @ weight_c).to(exact))
            product = (dlogits.t() @ group).to(exact)
            dweight = product if dweight is None else dweight.add_(product)
            product = dlogits.sum(0, dtype=exact)
            dbias = product if dbias is None else dbias.add_(product)
        if wants_grad:
            ctx.save_for_backward(
                torch.cat(dhidden) if len(dhidden) > 1 else dhidden[0], dweight, dbias
            )
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total):
        if ctx.used:
            raise RuntimeError("the fused loss's graph can be backpropagated once only")
        ctx.used = True
        # in place: the saved gradients are this function's own and not needed again
        grads = zip(ctx.saved_tensors, ctx.dtypes, strict=True)
        return (*(grad.mul_(grad_total).to(dtype) for grad, dtype in grads), None, None)


def projected_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor,
    target: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float = 0.0,
    dtype: torch.dtype | None = None,
    chunk_elements: int = 2**21,
    chunk_rows: int | None = None,
    group_rows: int | None = None,
) -> Tensor:
    """Summed cross-entropy of `hidden @ weight.T + bias` against `target`, in fp32
    (float64 for float64 inputs).

    hidden (M, D), weight (V, D), bias (V,), target (M,) -> a scalar: what
    `F.cross_entropy(F.linear(hidden, weight, bias).float(), target, reduction="sum",
    ignore_index=..., label_smoothing=...)` gives, without the (M, V) logits in memory.
    Differentiable once, the loss being the last node of the graph. `dtype`: the
    one the output layer's products run in (autocast's under AMP; default hidden's).
    `chunk_elements`: fp32 logits per chunk (the plan's `Kernels.loss_chunk`).
    """
    chunk_rows = chunk_rows or max(1, chunk_elements // weight.size(0))
    # the gradient products run over groups of up to 2**25 logits (128 MB in fp32)
    group_rows = group_rows or max(chunk_rows, 2**25 // weight.size(0))
    # forward runs with grad mode off, and ctx.needs_input_grad ignores torch.no_grad()
    wants_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (hidden, weight, bias))
    options = _Options(
        ignore_index, label_smoothing, dtype or hidden.dtype, chunk_rows, group_rows, wants_grad
    )
    return _ProjectedCrossEntropy.apply(hidden, weight, bias, target, options)

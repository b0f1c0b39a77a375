"""The input-feeding decoder loop for training, with its shared gradients deferred.

Under plain autograd every step of the loop adds a full-size gradient into each tensor
all steps share (LSTM and combine weights, attention keys and values). Here each step's
backward computes only the state's gradients and records its factors in (T, ...)
buffers; a `_Shared` node, which autograd runs after every step's backward, turns them
into the shared gradients with one large product each (docs/benchmarks.md, CPU
training). Equal to `Seq2Seq`'s stepwise loop (tests/test_recurrence.py); Luong only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from nmt.kernels.cells import Gates, attention_weights, gate_gradients, lstm_cell


class _Records:
    """Per-step factors of the shared gradients: (T, N, ...) buffers filled by the steps."""

    def __init__(self, steps: int, layers: int):
        self.steps = steps
        self.xh: list[Tensor | None] = [None] * layers  # LSTM input || previous h
        self.dgates: list[Tensor | None] = [None] * layers
        self.combine_in: Tensor | None = None  # context || top h
        self.dpre: Tensor | None = None  # gradient before the combine tanh
        self.query = self.attn = self.dscores = self.dctx = None
        # Only plain tensors here, never the loop's own: a step's ctx holds these
        # records, and a graph tensor held back would make a cycle that outlives the step.

    def buffer(self, current: Tensor | None, like: Tensor) -> Tensor:
        """`current`, or a new (T, *like.shape) buffer the first time."""
        return like.new_empty((self.steps, *like.shape)) if current is None else current


class _Shared(torch.autograd.Function):
    """Identity on the loop's shared tensors: (weight, bias) per layer, the combine
    weight, keys, values. Backward: their gradients from the records."""

    @staticmethod
    def forward(ctx, records: _Records, *shared: Tensor):
        ctx.records = records
        ctx.set_materialize_grads(False)
        return tuple(t.view_as(t) for t in shared)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        r: _Records = ctx.records
        computed = []
        for xh, dgates in zip(r.xh, r.dgates, strict=True):
            dgates = dgates.flatten(0, 1)  # (T * N, 4H)
            computed += [dgates.t() @ xh.flatten(0, 1), dgates.sum(0)]
        computed.append(r.dpre.flatten(0, 1).t() @ r.combine_in.flatten(0, 1))
        # (N, S, T) @ (N, T, H): every step's score gradient against its query at once
        dscores = r.dscores.permute(1, 2, 0).to(r.query.dtype)
        computed.append(torch.bmm(dscores, r.query.transpose(0, 1)))
        attn = r.attn.permute(1, 2, 0).to(r.dctx.dtype)
        computed.append(torch.bmm(attn, r.dctx.transpose(0, 1)))
        return (None, *(c if g is None else c + g for g, c in zip(grads, computed, strict=True)))


class _LSTMStep(torch.autograd.Function):
    """One LSTM layer at step t: (inputs..., h, c) -> (h', c'), weight (4H, I + H)."""

    @staticmethod
    def forward(ctx, records, layer, t, weight, bias, h, c, *inputs):
        xh = torch.cat([*inputs, h], 1)
        records.xh[layer] = buf = records.buffer(records.xh[layer], xh)
        buf[t] = xh
        h_new, c_new, gates = lstm_cell(torch.addmm(bias, xh, weight.t()), c)
        ctx.save_for_backward(weight, c, *gates)  # i, f, g, o, tanh(c')
        ctx.records, ctx.layer, ctx.t = records, layer, t
        ctx.widths = [x.size(1) for x in inputs] + [h.size(1)]
        return h_new, c_new

    @staticmethod
    @once_differentiable
    def backward(ctx, dh, dc):
        weight, c, *gates = ctx.saved_tensors
        r: _Records = ctx.records
        dh = torch.zeros_like(c) if dh is None else dh
        dc = torch.zeros_like(c) if dc is None else dc
        if r.dgates[ctx.layer] is None:
            r.dgates[ctx.layer] = weight.new_empty(r.steps, c.size(0), weight.size(0))
        dgates = r.dgates[ctx.layer][ctx.t]
        dc_prev = gate_gradients(dh, dc, Gates(*gates), c, dgates)
        dxh = dgates @ weight  # (N, I + H)
        *dinputs, dh_prev = dxh.split(ctx.widths, 1)
        return (None, None, None, None, None, dh_prev, dc_prev, *dinputs)


class _AttendStep(torch.autograd.Function):
    """Luong attention at step t: query (N, H) -> context (N, M), weights (N, S)."""

    @staticmethod
    def forward(ctx, records, t, query, keys, values, mask):
        attn = attention_weights(torch.bmm(query[:, None], keys.transpose(1, 2)), mask)[:, 0]
        context = torch.bmm(attn.to(values.dtype)[:, None], values)[:, 0]
        records.query = records.buffer(records.query, query)
        records.attn = records.buffer(records.attn, attn)
        records.query[t], records.attn[t] = query, attn
        ctx.save_for_backward(keys, values)
        ctx.records, ctx.t = records, t
        ctx.mark_non_differentiable(attn)
        return context, attn

    @staticmethod
    @once_differentiable
    def backward(ctx, dcontext, _):
        keys, values = ctx.saved_tensors
        r: _Records = ctx.records
        attn = r.attn[ctx.t]
        dattn = torch.bmm(dcontext[:, None], values.transpose(1, 2))[:, 0].float()
        dscores = attn * (dattn - (attn * dattn).sum(-1, keepdim=True))
        r.dscores = r.buffer(r.dscores, dscores)
        r.dctx = r.buffer(r.dctx, dcontext)
        r.dscores[ctx.t], r.dctx[ctx.t] = dscores, dcontext
        dquery = torch.bmm(dscores.to(keys.dtype)[:, None], keys)[:, 0]
        return None, None, dquery, None, None, None


class _CombineStep(torch.autograd.Function):
    """tanh(W [context, h]) at step t, W (H, M + H)."""

    @staticmethod
    def forward(ctx, records, t, weight, context, h):
        combined = torch.cat([context, h], 1)
        records.combine_in = records.buffer(records.combine_in, combined)
        records.combine_in[t] = combined
        out = (combined @ weight.t()).tanh()
        ctx.save_for_backward(weight, out)
        ctx.records, ctx.t, ctx.split = records, t, context.size(1)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        weight, out = ctx.saved_tensors
        r: _Records = ctx.records
        r.dpre = r.buffer(r.dpre, out)
        dpre = r.dpre[ctx.t]
        torch.mul(dout, 1 - out * out, out=dpre)
        dcombined = dpre @ weight
        return None, None, None, dcombined[:, : ctx.split], dcombined[:, ctx.split :]


def input_feeding_loop(
    embedded: Tensor,
    state: NamedTuple,
    memory: NamedTuple,
    lstm: torch.nn.LSTM,
    combine: Tensor,
    dropout: Callable[[Tensor], Tensor],
    *,
    dtype: torch.dtype,
) -> Tensor:
    """Runs the Luong input-feeding decoder over the target.

    embedded (N, T, E) target embeddings (dropout applied); `state`: the initial h, c
    (L, N, H); `memory`: keys (N, S, H), values (N, S, M), mask (N, S); `lstm` holds the
    decoder weights; `combine` (H, M + H). -> attentional outputs (N, T, H), dropout
    applied, as the model's stepwise loop returns them. `dtype`: the one the products
    run in (autocast's under AMP); the loop runs with autocast off.
    """
    h, c, keys, values, mask = state.h, state.c, memory.keys, memory.values, memory.mask
    layers, steps = h.size(0), embedded.size(1)
    records = _Records(steps, layers)
    shared = []
    for w_ih, w_hh, b_ih, b_hh in lstm.all_weights:
        shared += [torch.cat([w_ih, w_hh], 1), b_ih + b_hh]
    shared += [combine, keys, values]
    with torch.autocast(embedded.device.type, enabled=False):
        shared = _Shared.apply(records, *(x.to(dtype) for x in shared))
        *lstm_weights, combine, keys, values = shared
        embedded, h, c = embedded.to(dtype), h.to(dtype), c.to(dtype)
        hs, cs = list(h.unbind(0)), list(c.unbind(0))
        feed = embedded.new_zeros(embedded.size(0), h.size(-1))
        outputs = []
        for t, emb_t in enumerate(embedded.unbind(1)):
            inputs = [emb_t, feed]
            for layer in range(layers):
                if layer > 0:
                    inputs = [dropout(hs[layer - 1])]  # between layers, as nn.LSTM does
                weight, bias = lstm_weights[2 * layer], lstm_weights[2 * layer + 1]
                hs[layer], cs[layer] = _LSTMStep.apply(
                    records, layer, t, weight, bias, hs[layer], cs[layer], *inputs
                )
            context, _ = _AttendStep.apply(records, t, hs[-1], keys, values, mask)
            feed = dropout(_CombineStep.apply(records, t, combine, context, hs[-1]))
            outputs.append(feed)
    return torch.stack(outputs, 1)

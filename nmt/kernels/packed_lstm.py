"""The bidirectional encoder LSTM over sequences of different lengths, one autograd
node per layer.

`nn.LSTM` on a PackedSequence runs a few autograd ops per time step on a CPU, whose
backward zero-fills and adds a gate-sized gradient at every step (docs/benchmarks.md,
CPU training). Here a layer, both directions, is one Function on the packed layout: the
input projection of every token is one product, each step multiplies only the previous
state (in place on the gates), and backward (`cells.gate_gradients`) forms the input and
weight gradients after the loop, one product each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from nmt.kernels.cells import Gates, gate_gradients


def bidirectional_lstm(
    x: Tensor,
    lengths: Tensor,
    lstm: nn.LSTM,
    dropout: Callable[[Tensor], Tensor],
    *,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """What `lstm(pack_padded_sequence(x, lengths))`, unpacked, returns.

    x (N, S, I) padded inputs, lengths (N,) on the CPU, `lstm` a batch-first
    bidirectional nn.LSTM whose weights are used; `dropout` goes between layers.
    -> outputs (N, S, 2H), zero at padding; final h and c (2 * layers, N, H) in
    nn.LSTM's order. `dtype`: the one the products run in (autocast's under AMP);
    the results come back in x's dtype.
    """
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    steps = _Steps(packed.batch_sizes.tolist())
    data, final_h, final_c = packed.data, [], []
    with torch.autocast(x.device.type, enabled=False):
        for layer in range(lstm.num_layers):
            if layer > 0:
                data = dropout(data)  # between layers, as nn.LSTM does
            weights = [
                w.to(dtype) for w in lstm.all_weights[2 * layer] + lstm.all_weights[2 * layer + 1]
            ]
            data, h, c = _BidirectionalLayer.apply(steps, data.to(dtype), *weights)
            final_h.append(h)
            final_c.append(c)
    data = data.to(x.dtype)
    packed = PackedSequence(
        data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    out, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.size(1))
    # the final states in the caller's row order, forward and backward per layer
    unsort = packed.unsorted_indices
    h = torch.cat(final_h).index_select(1, unsort).to(x.dtype)
    c = torch.cat(final_c).index_select(1, unsort).to(x.dtype)
    return out, h, c


class _Steps:
    """Where each time step's rows lie in the packed layout.

    batch_sizes[t] rows are active at step t: packed rows offsets[t] ... offsets[t+1],
    the first batch_sizes[t] rows of the batch (sorted longest first).
    """

    def __init__(self, batch_sizes: list[int]):
        self.sizes = batch_sizes
        self.offsets = [0]
        for size in batch_sizes:
            self.offsets.append(self.offsets[-1] + size)
        self.packed = self.offsets[-1]
        self._previous = {}

    def rows(self, t: int) -> slice:
        return slice(self.offsets[t], self.offsets[t + 1])

    def previous(self, direction: int, device: torch.device) -> Tensor:
        """(P,) for every packed row, the packed row holding the same sequence's
        previous state in `direction` (0: forward in time), or P where there is
        none (the zero initial state)."""
        key = (direction, device)
        if key not in self._previous:
            index = []
            for t, size in enumerate(self.sizes):
                before = t - 1 if direction == 0 else t + 1
                known = self.sizes[before] if 0 <= before < len(self.sizes) else 0
                known = min(known, size)
                start = self.offsets[before] if known else 0
                index += list(range(start, start + known)) + [self.packed] * (size - known)
            self._previous[key] = torch.tensor(index, device=device)
        return self._previous[key]


def _with_zero_row(x: Tensor) -> Tensor:
    """x (P, D) -> (P + 1, D) with a zero last row, for `_Steps.previous` to index."""
    return torch.cat([x, x.new_zeros(1, x.size(1))])


class _BidirectionalLayer(torch.autograd.Function):
    """One bidirectional LSTM layer on packed rows: x (P, I) -> outputs (P, 2H),
    final h and c (2, N, H), rows in the packed (longest first) order.
    Weights: w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H,) forward, then backward."""

    @staticmethod
    def forward(
        ctx, steps: _Steps, x, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_ih_b, w_hh_b, b_ih_b, b_hh_b
    ):
        hidden, batch = w_hh_f.size(1), steps.sizes[0]
        w_ih = torch.cat([w_ih_f, w_ih_b])  # (8H, I)
        bias = torch.cat([b_ih_f + b_hh_f, b_ih_b + b_hh_b])
        # every token's input projection at once; each step adds its own state's part
        acts = torch.addmm(bias, x, w_ih.t())  # (P, 8H): i, f, g, o forward, then backward
        cells = x.new_empty(steps.packed, 2 * hidden)
        tanh_cells = torch.empty_like(cells)
        out = torch.empty_like(cells)
        final_h, final_c = [], []
        for direction, w_hh in enumerate((w_hh_f, w_hh_b)):
            gates = slice(4 * hidden * direction, 4 * hidden * (direction + 1))
            state = slice(hidden * direction, hidden * (direction + 1))
            h, c = x.new_zeros(batch, hidden), x.new_zeros(batch, hidden)
            order = range(len(steps.sizes))
            for t in order if direction == 0 else reversed(order):
                n, rows = steps.sizes[t], steps.rows(t)
                a = acts[rows, gates]
                torch.addmm(a, h[:n], w_hh.t(), out=a)  # (out=, not addmm_: FLOP counters see it)
                i, f, g, o = a.chunk(4, 1)
                a[:, : 2 * hidden].sigmoid_()  # i and f side by side
                g.tanh_()
                o.sigmoid_()
                c_t, tanh_c, h_t = cells[rows, state], tanh_cells[rows, state], out[rows, state]
                torch.addcmul(f * c[:n], i, g, out=c_t)
                torch.mul(o, torch.tanh(c_t, out=tanh_c), out=h_t)
                c[:n], h[:n] = c_t, h_t
            final_h.append(h)
            final_c.append(c)
        ctx.steps = steps
        ctx.save_for_backward(x, w_ih, w_hh_f, w_hh_b, acts, cells, tanh_cells, out)
        return out, torch.stack(final_h), torch.stack(final_c)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_final_h, d_final_c):
        x, w_ih, w_hh_f, w_hh_b, acts, cells, tanh_cells, out = ctx.saved_tensors
        steps: _Steps = ctx.steps
        hidden, batch = w_hh_f.size(1), steps.sizes[0]
        d_out = torch.zeros_like(out) if d_out is None else d_out
        d_gates = torch.empty_like(acts)  # (P, 8H)
        d_w_hh = []
        for direction, w_hh in enumerate((w_hh_f, w_hh_b)):
            gates = slice(4 * hidden * direction, 4 * hidden * (direction + 1))
            state = slice(hidden * direction, hidden * (direction + 1))
            previous = steps.previous(direction, x.device)
            c_prev = _with_zero_row(cells[:, state])[previous]  # (P, H)
            dh = x.new_zeros(batch, hidden) if d_final_h is None else d_final_h[direction].clone()
            dc = x.new_zeros(batch, hidden) if d_final_c is None else d_final_c[direction].clone()
            order = range(len(steps.sizes))
            for t in reversed(order) if direction == 0 else order:  # forward's order reversed
                n, rows = steps.sizes[t], steps.rows(t)
                step_gates = Gates(*acts[rows, gates].chunk(4, 1), tanh_cells[rows, state])
                dh_t = dh[:n] + d_out[rows, state]
                d_step = d_gates[rows, gates]
                dc[:n] = gate_gradients(dh_t, dc[:n], step_gates, c_prev[rows], d_step)
                torch.mm(d_step, w_hh, out=dh[:n])
            h_prev = _with_zero_row(out[:, state])[previous]  # (P, H)
            d_w_hh.append(d_gates[:, gates].t() @ h_prev)
        # the input and weight gradients of all steps and both directions at once
        d_x = d_gates @ w_ih
        d_w_ih = d_gates.t() @ x
        d_bias = d_gates.sum(0)
        d_w_ih_f, d_w_ih_b = d_w_ih.chunk(2)
        d_b_f, d_b_b = d_bias.chunk(2)
        # b_ih and b_hh have the same gradient; each gets its own copy, never a shared one
        return (
            *(None, d_x, d_w_ih_f, d_w_hh[0], d_b_f, d_b_f.clone()),
            *(d_w_ih_b, d_w_hh[1], d_b_b, d_b_b.clone()),
        )

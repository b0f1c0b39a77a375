"""An LSTM written out gate by gate, for looking inside; training keeps nn.LSTM.

Shapes: N batch rows, T time steps, I input size, H hidden size per direction.

At each step t an LSTM layer computes, from its input x_t and previous state
(h, c), four gates with PyTorch's weight layout (rows i, f, g, o):

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)   input gate: how much new content to write
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)   forget gate: how much of the cell to keep
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)      candidate content
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)   output gate: how much of the cell to show
    c' = f * c + i * g                           the memory cell
    h' = o * tanh(c')                            the hidden state

`ExplicitLSTM` has exactly nn.LSTM's parameter names, so either loads the
other's state_dict, and it returns every gate at every step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class GateTrace(NamedTuple):
    """One layer and direction over time; each (N, T, H), zero after a row's length."""

    input: Tensor
    forget: Tensor
    output: Tensor
    cell: Tensor  # the memory cell c after each step
    hidden: Tensor


def cell_step(
    x: Tensor, h: Tensor, c: Tensor, weights: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
    """One LSTM step with nn.LSTM's (w_ih, w_hh, b_ih, b_hh) -> h, c and gates (i, f, o)."""
    w_ih, w_hh, b_ih, b_hh = weights
    i, f, g, o = (x @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c, (i, f, o)


class ExplicitLSTM(nn.LSTM):
    """nn.LSTM's parameters, computed step by step in Python so the gates can be seen.

    Only batch_first layouts with per-row lengths (right padding) are supported:
    the reverse direction of a bidirectional layer starts at each row's last
    real step, as packed sequences do.
    """

    def forward_with_gates(
        self, x: Tensor, lengths: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor], dict[tuple[int, int], GateTrace]]:
        """x (N, T, I), lengths (N,) -> output (N, T, D*H), (h_n, c_n) (L*D, N, H), and
        the gates of each (layer, direction), direction 1 being the reverse one."""
        n, steps, _ = x.shape
        directions = 2 if self.bidirectional else 1
        if state is None:
            zeros = x.new_zeros(self.num_layers * directions, n, self.hidden_size)
            state = (zeros, zeros)
        real = torch.arange(steps, device=x.device)[None] < lengths[:, None]  # (N, T)
        finals_h, finals_c, traces = [], [], {}
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                weights = tuple(
                    getattr(self, f"{name}{suffix}")
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                )
                index = layer * directions + direction
                seq = _reverse_within(layer_input, lengths) if direction else layer_input
                out, h, c, trace = _run(seq, real, state[0][index], state[1][index], weights)
                if direction:
                    out = _reverse_within(out, lengths)
                    trace = GateTrace(*(_reverse_within(t, lengths) for t in trace))
                outputs.append(out)
                finals_h.append(h)
                finals_c.append(c)
                traces[(layer, direction)] = trace
            layer_input = torch.cat(outputs, dim=-1)
            if layer < self.num_layers - 1 and self.training and self.dropout:
                layer_input = nn.functional.dropout(layer_input, self.dropout)
        return layer_input, (torch.stack(finals_h), torch.stack(finals_c)), traces


def _run(
    seq: Tensor, real: Tensor, h: Tensor, c: Tensor, weights: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Tensor, GateTrace]:
    """One direction of one layer over (N, T, I); padded steps leave the state alone."""
    records = []
    for t in range(seq.size(1)):
        new_h, new_c, (i, f, o) = cell_step(seq[:, t], h, c, weights)
        keep = real[:, t, None]
        h, c = torch.where(keep, new_h, h), torch.where(keep, new_c, c)
        mask = keep.to(seq.dtype)
        records.append((i * mask, f * mask, o * mask, c * mask, h * mask))
    stacked = [torch.stack(parts, dim=1) for parts in zip(*records, strict=True)]
    trace = GateTrace(*stacked)
    return trace.hidden, h, c, trace


def _reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverses each row's first `length` steps of x (N, T, ...); padding stays put."""
    steps = x.size(1)
    t = torch.arange(steps, device=x.device)[None]  # (1, T)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (N, T)
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))

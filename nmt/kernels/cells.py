"""The LSTM cell and Luong attention's weights, written once: every kernel, the model's
reference and `nmt inspect` compute them here. Shapes: N rows, H hidden size, I input
size, S source length, T query steps.

`lstm_cell` is the gate arithmetic after the products (its docstring writes it out),
`gate_gradients` its backward; a kernel that works in place for speed (`packed_lstm`'s
forward) keeps its own forward and shares the backward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Gates(NamedTuple):
    """One step's activated gates, each (N, H)."""

    input: Tensor
    forget: Tensor
    candidate: Tensor  # g
    output: Tensor
    tanh_cell: Tensor  # tanh(c'), which h' = o * tanh(c') shows


def lstm_cell(preactivations: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Gates]:
    """The gates' pre-activations (N, 4H) and the cell c (N, H) -> h', c' and the gates.

    From the input x and the previous state (h, c), with torch's weight layout (rows i,
    f, g, o), the pre-activations are W_i* x + b_i* + W_h* h + b_h* for each gate, and:

        i = sigmoid(.)        input gate: how much new content to write
        f = sigmoid(.)        forget gate: how much of the cell to keep
        g = tanh(.)           candidate content
        o = sigmoid(.)        output gate: how much of the cell to show
        c' = f * c + i * g    the memory cell
        h' = o * tanh(c')     the hidden state
    """
    i, f, g, o = preactivations.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    tanh_c = torch.tanh(c)
    return o * tanh_c, c, Gates(i, f, g, o, tanh_c)


def cell_step(
    x: Tensor, h: Tensor, c: Tensor, weights: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Gates]:
    """One LSTM step with nn.LSTM's (w_ih, w_hh, b_ih, b_hh) -> h, c and the gates."""
    w_ih, w_hh, b_ih, b_hh = weights
    return lstm_cell(x @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh, c)


def gate_gradients(dh: Tensor, dc: Tensor, gates: Gates, c: Tensor, out: Tensor) -> Tensor:
    """`lstm_cell`'s backward. dh, dc (N, H): the gradients reaching h' and c'; `gates`
    and c (N, H), the previous cell, as the forward saw them. Writes the gradient of the
    pre-activations into `out` (N, 4H) and returns the previous cell's (N, H)."""
    i, f, g, o, tanh_c = gates
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    di, df, dg, do = out.chunk(4, -1)
    torch.mul(dc * g, i * (1 - i), out=di)
    torch.mul(dc * c, f * (1 - f), out=df)
    torch.mul(dc * i, 1 - g * g, out=dg)
    torch.mul(dh * tanh_c, o * (1 - o), out=do)
    return dc * f


def attention_weights(scores: Tensor, mask: Tensor) -> Tensor:
    """scores (N, T, S) -> fp32 weights (N, T, S) over the real positions of mask (N, S)."""
    # fp32 before masking: -inf and softmax are unsafe in half precision
    return scores.float().masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)

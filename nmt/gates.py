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

`lstm_cell` is that arithmetic after the product, the one definition the kernels
(nmt.kernels) share; `lstm_gates` runs an nn.LSTM this way, on its own weights, and
returns every gate at every step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class Gates(NamedTuple):
    """One step's activated gates, each (N, H)."""

    input: Tensor
    forget: Tensor
    candidate: Tensor  # g
    output: Tensor
    tanh_cell: Tensor  # tanh(c'), which h' = o * tanh(c') shows


def lstm_cell(preactivations: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Gates]:
    """The gates' pre-activations (N, 4H), in torch's order i, f, g, o, and the cell c
    (N, H) -> h', c' and the gates."""
    i, f, g, o = preactivations.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    tanh_c = torch.tanh(c)
    return o * tanh_c, c, Gates(i, f, g, o, tanh_c)


class GateTrace(NamedTuple):
    """One layer and direction over time; each (N, T, H)."""

    input: Tensor
    forget: Tensor
    output: Tensor
    cell: Tensor  # the memory cell c after each step
    hidden: Tensor


def cell_step(
    x: Tensor, h: Tensor, c: Tensor, weights: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Gates]:
    """One LSTM step with nn.LSTM's (w_ih, w_hh, b_ih, b_hh) -> h, c and the gates."""
    w_ih, w_hh, b_ih, b_hh = weights
    return lstm_cell(x @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh, c)


def lstm_gates(lstm: nn.LSTM, x: Tensor) -> tuple[Tensor, dict[tuple[int, int], GateTrace]]:
    """A batch-first nn.LSTM in eval mode over x (N, T, I), rows without padding,
    computed step by step with its own weights -> its output (N, T, D * H) and the gates
    of each (layer, direction), direction 1 the reverse one."""
    directions, steps = 2 if lstm.bidirectional else 1, range(x.size(1))
    traces, layer_input = {}, x
    for layer in range(lstm.num_layers):
        outputs = []
        for direction in range(directions):
            weights = lstm.all_weights[layer * directions + direction]
            h = c = x.new_zeros(x.size(0), lstm.hidden_size)
            records = {}
            for t in reversed(steps) if direction else steps:
                h, c, gates = cell_step(layer_input[:, t], h, c, weights)
                records[t] = (gates.input, gates.forget, gates.output, c, h)
            in_order = zip(*(records[t] for t in steps), strict=True)
            traces[(layer, direction)] = GateTrace(*(torch.stack(part, 1) for part in in_order))
            outputs.append(traces[(layer, direction)].hidden)
        layer_input = torch.cat(outputs, dim=-1)
    return layer_input, traces


def unit_values(trace: GateTrace) -> Tensor:
    """A (T, H) trace's input, forget and output gates and its squashed cell tanh(c), the
    four on comparable scales ([0, 1], [-1, 1]) -> (4, T, H)."""
    return torch.stack([trace.input, trace.forget, trace.output, trace.cell.tanh()])


def moving_units(trace: GateTrace, k: int) -> Tensor:
    """The k units of a (T, H) trace that change most over its steps, most first: the
    spread (standard deviation over steps) of `unit_values`, averaged over the four.
    Mean gates sit near 0.5 and say nothing; single units switch on and off."""
    values = unit_values(trace)
    spread = values.std(dim=1, correction=0).mean(0)  # (H,)
    # ties (one step: no spread at all) go to the fullest cells
    spread = spread + 1e-6 * values[3].abs().mean(0)
    return spread.topk(min(k, spread.numel())).indices


def distinctive_units(trace: GateTrace, k: int) -> Tensor:
    """(T, H) trace -> (T, k): at each step, the k units whose values there stand out most
    from their own mean over the steps (absolute deviation, averaged over `unit_values`),
    most first: the units that mark that position, as LSTMVis selects them."""
    values = unit_values(trace)
    deviation = (values - values.mean(dim=1, keepdim=True)).abs().mean(0)  # (T, H)
    return deviation.topk(min(k, deviation.size(-1)), dim=-1).indices

"""An nn.LSTM run step by step with its own weights, every gate recorded, and which of
its units to show: single units, not means over units (those sit near 0.5)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from nmt.kernels.cells import cell_step


class GateTrace(NamedTuple):
    """One layer and direction over time; each (N, T, H)."""

    input: Tensor
    forget: Tensor
    output: Tensor
    cell: Tensor  # the memory cell c after each step
    hidden: Tensor


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

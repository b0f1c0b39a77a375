from __future__ import annotations

import pytest
import torch

from nmt.reporting.inside import GateTrace, distinctive_units, lstm_gates, moving_units


@pytest.mark.parametrize(
    ("layers", "bidirectional"), [(1, False), (2, False), (2, True), (3, True)]
)
def test_the_gate_by_gate_lstm_equals_the_fused_one_in_every_layer_and_direction(
    layers, bidirectional
):
    torch.manual_seed(0)
    fused = torch.nn.LSTM(5, 7, layers, batch_first=True, bidirectional=bidirectional).eval()
    x = torch.randn(4, 6, 5)

    out, _ = fused(x)
    mine, traces = lstm_gates(fused, x)

    torch.testing.assert_close(mine, out, rtol=1e-5, atol=1e-6)
    directions = 2 if bidirectional else 1
    assert set(traces) == {(layer, d) for layer in range(layers) for d in range(directions)}
    top = traces[(layers - 1, 0)]
    torch.testing.assert_close(top.hidden, out[..., :7], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(top.hidden, top.output * top.cell.tanh())  # h = o * tanh(c)
    for gate in (top.input, top.forget, top.output):
        assert ((gate > 0) & (gate < 1)).all()
    if bidirectional:  # the reverse direction's first step is the sequence's last
        torch.testing.assert_close(
            traces[(layers - 1, 1)].hidden, out[..., 7:], rtol=1e-5, atol=1e-6
        )


def steady_trace(steps: int = 6, units: int = 8) -> GateTrace:
    """Gates half open and cells at 0.3 everywhere, with a little noise."""
    torch.manual_seed(0)
    half = torch.full((steps, units), 0.5) + 0.01 * torch.rand(steps, units)
    cell = torch.full((steps, units), 0.3) + 0.01 * torch.rand(steps, units)
    return GateTrace(half.clone(), half.clone(), half.clone(), cell, cell.tanh())


def test_the_units_that_move_most_come_first():
    trace = steady_trace()
    trace.forget[:, 5] = torch.tensor([0.02, 0.98, 0.02, 0.98, 0.02, 0.98])  # switches
    trace.cell[:, 2] = torch.linspace(-2, 2, 6)  # counts

    units = moving_units(trace, 3)

    assert set(units[:2].tolist()) == {2, 5} and units[2] not in (2, 5)


def test_the_distinctive_units_of_a_step_are_the_ones_that_stand_out_there():
    trace = steady_trace()
    trace.output[3, 6] = 0.99  # unit 6 fires at step 3 only
    trace.cell[1, 4] = -3.0  # unit 4's cell dips at step 1 only

    chosen = distinctive_units(trace, 2)

    assert chosen.shape == (6, 2)
    assert chosen[3, 0] == 6 and chosen[1, 0] == 4

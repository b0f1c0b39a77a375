from __future__ import annotations

import pytest
import torch

from nmt.gates import lstm_gates


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

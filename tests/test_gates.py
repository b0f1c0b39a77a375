from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.gates import ExplicitLSTM


@pytest.mark.parametrize(
    ("layers", "bidirectional"), [(1, False), (2, False), (2, True), (3, True)]
)
def test_explicit_lstm_equals_the_fused_one_in_every_layer_and_direction(layers, bidirectional):
    torch.manual_seed(0)
    fused = torch.nn.LSTM(5, 7, layers, batch_first=True, bidirectional=bidirectional).eval()
    explicit = ExplicitLSTM(5, 7, layers, batch_first=True, bidirectional=bidirectional).eval()
    explicit.load_state_dict(fused.state_dict())
    x, lengths = torch.randn(4, 6, 5), torch.tensor([6, 3, 1, 5])
    directions = 2 if bidirectional else 1
    h0 = torch.randn(layers * directions, 4, 7), torch.randn(layers * directions, 4, 7)

    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, (h, c) = fused(packed, h0)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=6)
    mine, (my_h, my_c), traces = explicit.forward_with_gates(x, lengths, h0)

    torch.testing.assert_close(mine, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(my_h, h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(my_c, c, rtol=1e-5, atol=1e-6)
    assert set(traces) == {(layer, d) for layer in range(layers) for d in range(directions)}
    top = traces[(layers - 1, 0)]
    torch.testing.assert_close(top.hidden, out[..., :7], rtol=1e-5, atol=1e-6)
    for gate in (top.input, top.forget, top.output):
        assert ((gate >= 0) & (gate <= 1)).all()
        assert (gate[2, 1:] == 0).all()  # padding steps of the length-1 row are empty

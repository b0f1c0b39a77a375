"""The bidirectional encoder LSTM with the lengths on the device: no packing, no host sync.

Packing reads the lengths on the host and gives each batch its own layout, so a step that
packs cannot be captured as a CUDA graph. Here every row runs all S steps, and a step past
a row's end leaves its state as it was; outputs, final states and gradients equal
`nn.LSTM`'s on packed sequences (tests/test_packed_lstm.py). Slower than `packed_lstm`
on a CPU: it is the encoder of captured training steps (`Kernels.encoder == "masked"`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nmt.kernels.cells import lstm_cell


def masked_bidirectional_lstm(
    x: Tensor,
    lengths: Tensor,
    lstm: nn.LSTM,
    dropout: Callable[[Tensor], Tensor],
    *,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """What `lstm(pack_padded_sequence(x, lengths))`, unpacked, returns.

    x (N, S, I) padded inputs; lengths (N,), on x's device, each >= 1; `lstm` a
    batch-first bidirectional nn.LSTM whose weights are used; `dropout` goes between
    layers. -> outputs (N, S, 2H), zero at padding; final h and c (2 * layers, N, H)
    in nn.LSTM's order. `dtype`: the one the products run in (autocast's under AMP);
    the results come back in x's dtype.
    """
    steps = torch.arange(x.size(1), device=x.device)
    real = (steps[None, :] < lengths.to(x.device)[:, None])[..., None]  # (N, S, 1)
    data, final_h, final_c = x, [], []
    with torch.autocast(x.device.type, enabled=False):
        data = data.to(dtype)
        for layer in range(lstm.num_layers):
            if layer > 0:
                data = dropout(data)  # between layers, as nn.LSTM does
            outputs = []
            for direction in (0, 1):
                weights = [w.to(dtype) for w in lstm.all_weights[2 * layer + direction]]
                out, h, c = _direction(data, real, weights, reverse=direction == 1)
                outputs.append(out)
                final_h.append(h)
                final_c.append(c)
            data = torch.cat(outputs, -1)
    h, c = torch.stack(final_h), torch.stack(final_c)
    return data.to(x.dtype), h.to(x.dtype), c.to(x.dtype)


def _direction(
    x: Tensor, real: Tensor, weights: list[Tensor], *, reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """One direction over x (N, S, I) with real (N, S, 1) marking tokens -> outputs
    (N, S, H), zero at padding, and the final h, c (N, H)."""
    w_ih, w_hh, b_ih, b_hh = weights
    gates_in = torch.addmm(b_ih + b_hh, x.flatten(0, 1), w_ih.t()).view(*x.shape[:2], -1)
    h = c = x.new_zeros(x.size(0), w_hh.size(1))
    outputs = [None] * x.size(1)
    order = range(x.size(1) - 1, -1, -1) if reverse else range(x.size(1))
    for t in order:
        h_new, c_new, _ = lstm_cell(gates_in[:, t] + h @ w_hh.t(), c)
        keep = real[:, t]
        # past a row's end its state stays: the forward direction's final state is the
        # one at its last token, and the backward direction starts there from zeros
        h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        outputs[t] = h_new * keep
    return torch.stack(outputs, 1), h, c

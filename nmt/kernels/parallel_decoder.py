"""GNMT's parallel decoder (`model.decoder=parallel`) over the whole target, for training.

Without input feeding nothing flows from attention back into a layer: the bottom layer
runs as one nn.LSTM call over the target, attention as one batched matmul, and each upper
layer ([the output below, the context]) as one more call. `Seq2Seq._step` is the reference
(tests/test_model.py compares values and gradients in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn


def parallel_decoder(
    embedded: Tensor,
    state: NamedTuple,
    memory: NamedTuple,
    lstms: Sequence[nn.LSTM],
    attention: Callable,
    combine: Callable[[Tensor], Tensor],
    dropout: Callable[[Tensor], Tensor],
) -> Tensor:
    """embedded (N, T, E) target embeddings (dropout applied); `state`: the initial h, c
    (L, N, H); `lstms`: the L one-layer decoder LSTMs, bottom first; `attention`: query
    (N, T, H), memory -> context (N, T, M), weights; `combine`: (..., M + H) -> (..., H).
    -> attentional outputs (N, T, H), dropout applied, as the stepwise loop returns them.

    Padded target positions come after the real ones, and an LSTM never looks back from
    them: they change no real position's output."""
    bottom, *upper = lstms
    hidden, _ = bottom(embedded, (state.h[:1], state.c[:1]))  # (N, T, H)
    context, _ = attention(hidden, memory)  # (N, T, M)
    for layer, lstm in enumerate(upper, 1):
        initial = (state.h[layer : layer + 1], state.c[layer : layer + 1])
        # dropout between layers as nn.LSTM's, on the layer's output (never the context)
        hidden, _ = lstm(torch.cat([dropout(hidden), context], -1), initial)
    return dropout(torch.tanh(combine(torch.cat([context, hidden], -1))))

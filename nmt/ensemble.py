"""Several models decoded as one: search cannot tell an Ensemble from a single model.

Each step averages the members' log-probabilities; memories and states are
tuples of the members' own, re-indexed together by `.select(rows)`.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Members(tuple):
    """One memory or state per member model."""

    def select(self, rows: Tensor) -> Members:
        return Members(part.select(rows) for part in self)


class Ensemble:
    def __init__(self, models: list):
        self.models = list(models)

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Members, Members]:
        encoded = [model.encode(src, src_len) for model in self.models]
        return Members(m for m, _ in encoded), Members(s for _, s in encoded)

    def decode_step(
        self, token: Tensor, state: Members, memory: Members
    ) -> tuple[Tensor, Members, Tensor | None]:
        """-> mean log-probabilities (N, V), the members' states, mean attention (N, S)."""
        members = zip(self.models, state, memory, strict=True)
        steps = [model.decode_step(token, s, m) for model, s, m in members]
        logp = torch.stack([logp for logp, _, _ in steps]).mean(0)
        attns = [attn for _, _, attn in steps]
        attn = None if any(a is None for a in attns) else torch.stack(attns).mean(0)
        return logp, Members(s for _, s, _ in steps), attn

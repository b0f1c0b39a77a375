"""Dropout on a CPU with its masks drawn at a third of torch's cost.

torch draws a CPU dropout mask one element at a time (15 ns an element on this
project's machine; 3.9% of an fp32 training step's op time, docs/benchmarks.md).
Here each 32-bit random integer gives two elements a 16-bit uniform: an element is
kept with probability k / 2**16, k = round((1 - p) * 2**16), and scaled by
2**16 / k, so the output's expectation is exactly the input.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform16_dropout(x: Tensor, p: float) -> Tensor:
    """x with each element zeroed with probability about p (exactly 1 - k / 2**16)."""
    keep = round((1 - p) * 2**16)
    pairs = torch.randint(-(2**31), 2**31, ((x.numel() + 1) // 2,), dtype=torch.int32)
    uniform = pairs.view(torch.int16)[: x.numel()].view(x.shape)  # in [-2**15, 2**15)
    return x * (uniform < keep - 2**15).to(x.dtype).mul_(2**16 / keep)

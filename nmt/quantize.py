"""int8 translation on a CPU: the decoder step's matrix products in 8-bit integers.

Beam search spends most of its time in three products per step and beam row:
the decoder LSTM's gates, the attentional `combine` layer and the output layer
over the vocabulary. On a CPU without bf16 units (AVX2 only) fp32 is the best
float rate, and int8 products run about twice as fast (fbgemm's u8 x s8 kernels).

Dynamic quantization: each weight row is scaled to int8 once, when the model is
quantized; the activations are scaled at every call by their range (one scale
per call, 7 bits). Sums accumulate in int32, and results come back in fp32.
Most of what the step multiplies (the hidden state, the attentional vector) are
tanh outputs, within (-1, 1) in every row. The encoder, embeddings,
attention scores and the softmax stay fp32: they run once per batch, or are a
small share of the step. Inference only: there are no gradients through it.

Uses torch's fbgemm operators (`torch.ops.quantized`), which torch marks as
deprecated in favour of torchao; the project pins a torch that has them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from nmt.model import PrecisionError


def int8_available() -> bool:
    """Whether this torch build can run int8 products on this CPU."""
    engines = torch.backends.quantized.supported_engines
    return hasattr(torch.ops.quantized, "linear_dynamic") and (
        "x86" in engines or "fbgemm" in engines or "qnnpack" in engines
    )


class Int8Linear(nn.Module):
    """`F.linear(x, weight, bias)` with weight rows in int8, each with its own scale.

    x (..., in) fp32 -> (..., out) fp32.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        weight = weight.detach().float().cpu()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        zero = torch.zeros(weight.size(0), dtype=torch.long)
        with warnings.catch_warnings():  # torch's deprecation notice for quantized tensors
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)
            b = None if bias is None else bias.detach().float().cpu()
            self.packed = torch.ops.quantized.linear_prepack(q, b)
        self.in_features, self.out_features = weight.size(1), weight.size(0)

    def forward(self, x: Tensor) -> Tensor:
        # reduce_range: 7-bit activations, so u8 x s8 pair sums cannot saturate int16
        # in the AVX2 kernels (what torch's own dynamic quantization does on x86)
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8LSTMCell:
    """A drop-in for `torch.lstm_cell` that computes each decoder layer's gates in int8.

    It is called with the layer's fp32 weights, as `Seq2Seq._lstm_step` calls
    torch.lstm_cell, and finds that layer's int8 copy by the weight tensor. The
    copy is one product over [x, h], weight [W_ih, W_hh] and bias b_ih + b_hh:
    one activation pass and one kernel call instead of two and a sum. Both
    halves share one activation scale: h and the fed-back output are tanh
    outputs within (-1, 1), and so were the embeddings of the two Multi30k
    models measured, the demo's and the peers' size (|e| < 0.56).
    """

    def __init__(self, lstm: nn.LSTM):
        self.layers = {
            id(w_ih): Int8Linear(torch.cat([w_ih, w_hh], 1), b_ih + b_hh)
            for w_ih, w_hh, b_ih, b_hh in lstm.all_weights
        }

    def __call__(self, x, state, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor]:
        """x (N, I), state (h, c) each (N, H) -> the next (h, c)."""
        h, c = state
        gates = self.layers[id(w_ih)](torch.cat([x, h], -1))  # (N, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def quantize_decoder(model) -> None:
    """In place: a Seq2Seq's per-step products (decoder LSTM, combine, output
    projection, output layer) in int8, for inference on the CPU."""
    if next(model.parameters()).device.type != "cpu":
        raise PrecisionError("int8 translation runs on the CPU only")
    if not int8_available():
        raise PrecisionError(
            "int8 needs torch's quantized CPU operators, which this torch build lacks"
        )
    model.eval()
    model.lstm_cell = Int8LSTMCell(model.decoder)
    model.combine = Int8Linear(model.combine.weight, model.combine.bias)
    if model.out_proj is not None:
        model.out_proj = Int8Linear(model.out_proj.weight, model.out_proj.bias)
    model.generator = Int8Linear(model.generator.weight, model.generator.bias)

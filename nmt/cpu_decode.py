"""The decoder step's products, prepared once for translation on a CPU.

Beam search spends most of its time in three products per step and beam row:
the decoder LSTM's gates, the attentional `combine` layer and the output layer
over the vocabulary (after `out_proj` where the embeddings are tied). While a
checkpoint translates their weights never change, so they are prepared once:

- fp32 (the default on a CPU): each weight reordered once into oneDNN's blocked
  layout. torch's own CPU product (MKL's sgemm) repacks the weight at every
  call, which for a step's few rows is much of the call: an 8000 x 512 output
  layer took 2.9-3.9 ms on 5 rows and 23.5-23.7 ms on 320, against 0.46-0.68
  and 18.2-18.6 ms prepacked (AMD EPYC, AVX2, 2 threads; docs/benchmarks.md).
  Same arithmetic, other summation order: results agree to fp32 rounding.
- int8 (`--precision int8`): dynamic quantization. Each weight row is scaled to
  int8 once; the activations are scaled at every call by their range (one scale
  per call, 7 bits). Sums accumulate in int32, and results come back in fp32.
  Most of what the step multiplies (the hidden state, the attentional vector)
  are tanh outputs, within (-1, 1) in every row. On a CPU without bf16 units
  (AVX2 only) int8 products run about twice as fast as fp32 (fbgemm's u8 x s8
  kernels).

Either way the LSTM's two products become one, over cat([x, h]) with weight
[W_ih, W_hh] and bias b_ih + b_hh: one kernel call per layer instead of two and
a sum. The encoder, embeddings, attention scores and the softmax stay as they
are: they run once per batch, or are a small share of the step. Inference only:
there are no gradients through these layers, and they are snapshots, so only a
model whose weights no longer change may be prepared (`Translator.load`'s).

Uses torch's operators for these layouts: `torch.ops.mkldnn`'s prepacked linear
(what torch.compile's CPU backend emits) and fbgemm's (`torch.ops.quantized`,
which torch marks as deprecated in favour of torchao); the project pins a torch
that has both, and fp32 falls back to torch's own products without them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from nmt.model import PrecisionError

# The row count oneDNN chooses the packed layout for; it serves other counts as
# well (5 to 1,000 rows measured), and beam search's rows change at every step.
_PACKED_FOR_ROWS = 256


def int8_available() -> bool:
    """Whether this torch build can run int8 products on this CPU."""
    engines = torch.backends.quantized.supported_engines
    return hasattr(torch.ops.quantized, "linear_dynamic") and (
        "x86" in engines or "fbgemm" in engines or "qnnpack" in engines
    )


def packed_fp32_available() -> bool:
    """Whether this torch build has oneDNN's prepacked fp32 linear."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class _PreparedLinear(nn.Module):
    """`F.linear(x, weight, bias)` from a copy of the weights prepared once:
    x (..., in) fp32 -> (..., out) fp32. Subclasses prepare and multiply."""

    kind = ""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.in_features, self.out_features = weight.size(1), weight.size(0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"


class PackedLinear(_PreparedLinear):
    """fp32, the weight in oneDNN's blocked layout."""

    kind = "packed fp32"

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__(weight)
        weight = weight.detach().float().cpu()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, _PACKED_FOR_ROWS)
        self.bias = None if bias is None else bias.detach().float().cpu()

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)


class Int8Linear(_PreparedLinear):
    """Weight rows in int8, each with its own scale."""

    kind = "int8"

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__(weight)
        weight = weight.detach().float().cpu()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        zero = torch.zeros(weight.size(0), dtype=torch.long)
        with warnings.catch_warnings():  # torch's deprecation notice for quantized tensors
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)
            b = None if bias is None else bias.detach().float().cpu()
            self.packed = torch.ops.quantized.linear_prepack(q, b)

    def forward(self, x: Tensor) -> Tensor:
        # reduce_range: 7-bit activations, so u8 x s8 pair sums cannot saturate int16
        # in the AVX2 kernels (what torch's own dynamic quantization does on x86)
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=True)


class FusedLSTMCell:
    """The decoder's cell function (`Seq2Seq.lstm_cell`) with each layer's gates from
    one prepared product over [x, h].

    In int8 both halves share one activation scale: h and the fed-back output are
    tanh outputs within (-1, 1), and so were the embeddings of the two Multi30k
    models measured, the demo's and the peers' size (|e| < 0.56).
    """

    def __init__(self, lstm: nn.LSTM, linear: type[_PreparedLinear]):
        self.layers = [
            linear(torch.cat([w_ih, w_hh], 1), b_ih + b_hh)
            for w_ih, w_hh, b_ih, b_hh in lstm.all_weights
        ]

    def __call__(self, layer: int, x: Tensor, state: tuple[Tensor, Tensor]):
        """x (N, I), state (h, c) each (N, H) -> the next (h, c)."""
        h, c = state
        gates = self.layers[layer](torch.cat([x, h], -1))  # (N, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def prepare_decoder(model, precision: str) -> None:
    """In place: a Seq2Seq's per-step products (decoder LSTM, combine, output
    projection, output layer) prepared for CPU inference in `precision`, int8 or
    fp32. fp32 without oneDNN's prepacked operators leaves the model as it is."""
    if next(model.parameters()).device.type != "cpu":
        raise PrecisionError(f"prepared {precision} products run on the CPU only")
    if precision == "int8":
        if not int8_available():
            raise PrecisionError(
                "int8 needs torch's quantized CPU operators, which this torch build lacks"
            )
        linear = Int8Linear
    elif precision == "fp32":
        if not packed_fp32_available():
            return
        linear = PackedLinear
    else:
        raise ValueError(f"no prepared products for {precision}")
    model.eval()
    model.lstm_cell = FusedLSTMCell(model.decoder, linear)
    model.combine = linear(model.combine.weight, model.combine.bias)
    if model.out_proj is not None:
        model.out_proj = linear(model.out_proj.weight, model.out_proj.bias)
    model.generator = linear(model.generator.weight, model.generator.bias)

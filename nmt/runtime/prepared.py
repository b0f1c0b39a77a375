"""The decoder step's products, prepared once for translation on a CPU.

Beam search spends most of its time in the decoder LSTM's, `combine`'s and the output
layer's products; while a checkpoint translates their weights never change, so
`PreparedModel`, a wrapper search cannot tell from the model, prepares them once: fp32
weights reordered into oneDNN's blocked layout (MKL repacks them at every call), or
int8 (dynamic quantization, fbgemm). The LSTM's two products become one, over [x, h].
Figures: docs/benchmarks.md, translation speed; `nmt.plan` checks the operators exist.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nmt.kernels.cells import lstm_cell
from nmt.model import DecoderState, Memory, Seq2Seq, StepLayers

# The row count oneDNN chooses the packed layout for; it serves other counts as
# well (5 to 1,000 rows measured), and beam search's rows change at every step.
_PACKED_FOR_ROWS = 256


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
    """The decoder's cell function (`StepLayers.cell`), each layer's gates from one
    prepared product over [x, h]. In int8 both share one activation scale: h and the
    fed-back output are tanh outputs in (-1, 1), and so were the embeddings of the two
    Multi30k models measured, the demo's and the peers' size (|e| < 0.56); the parallel
    decoder's upper layers also take the context, an average of the encoder's tanh outputs.

    `weights`: each layer's [w_ih, w_hh, b_ih, b_hh] (`Seq2Seq.decoder_weights`, or an
    nn.LSTM's `all_weights`)."""

    def __init__(self, weights: Sequence[Sequence[Tensor]], linear: type[_PreparedLinear]):
        self.layers = [
            linear(torch.cat([w_ih, w_hh], 1), b_ih + b_hh) for w_ih, w_hh, b_ih, b_hh in weights
        ]

    def __call__(self, layer: int, x: Tensor, state: tuple[Tensor, Tensor]):
        """x (N, I), state (h, c) each (N, H) -> the next (h, c)."""
        h, c = state
        h, c, _ = lstm_cell(self.layers[layer](torch.cat([x, h], -1)), c)
        return h, c


class PreparedModel:
    """A Seq2Seq (in eval mode) whose decoder step multiplies with weights prepared once,
    "packed" (fp32) or "int8": its decoder LSTM, `combine`, output projection and output
    layer. The model itself is left as it is."""

    def __init__(self, model: Seq2Seq, kind: str):
        linear = {"packed": PackedLinear, "int8": Int8Linear}[kind]
        self.model = model
        outputs = [model.out_proj, model.generator]
        weights = [model.decoder_weights(layer) for layer in range(model.cfg.dec_layers)]
        self.layers = StepLayers(
            cell=FusedLSTMCell(weights, linear),
            combine=linear(model.combine.weight, model.combine.bias),
            output=nn.Sequential(*(linear(m.weight, m.bias) for m in outputs if m is not None)),
        )

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Memory, DecoderState]:
        return self.model.encode(src, src_len)

    def decode_step(self, token: Tensor, state: DecoderState, memory: Memory):
        return self.model.decode_step(token, state, memory, self.layers)

"""LSTM encoder-decoder with attention: Luong (dot, general) or Bahdanau (additive).

Shapes: N batch rows (batch * beam during search), S source length, T target
length, E embedding dim, H decoder hidden dim, M = 2 * encoder hidden (the
bidirectional memory width), L decoder layers, V vocabulary size.

Search needs two calls: `encode` once per batch and `decode_step` once per
output token. Both return immutable tuples re-indexed with `.select(rows)`, so
beam search never looks inside them. `forward` is teacher forcing for the loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import ModelConfig
from nmt.loss import projected_cross_entropy
from nmt.packed_lstm import bidirectional_lstm
from nmt.recurrence import input_feeding_loop

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The one mixed-precision context: a no-op for fp32, and for int8, whose
    products are its quantized layers' own (nmt.cpu_decode)."""
    low = precision in ("bf16", "fp16")
    return torch.autocast(device.type, dtype=DTYPES[precision if low else "fp32"], enabled=low)


class PrecisionError(ValueError):
    """A precision asked for where it cannot run well: this device, CPU or torch build."""


def cpu_runs(precision: str) -> bool:
    """Whether oneDNN has kernels for `precision`'s products on this CPU; bf16 and
    fp16 need AVX-512 or newer. Without them autocast's products fall back to
    scalar loops: a demo-config training step ran 44x slower in bf16 than in fp32
    on an AVX2 EPYC, and beam search 5-6x slower (docs/benchmarks.md)."""
    if precision == "bf16":
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "fp16":
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return True


def product_dtype(x: Tensor) -> torch.dtype:
    """The dtype matrix products run in: autocast's where it is on, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class Dropout(nn.Module):
    """nn.Dropout, with a CPU's masks drawn at a third of torch's cost.

    torch draws a CPU dropout mask one element at a time (15 ns an element on this
    project's machine; 3.9% of an fp32 training step's op time, docs/benchmarks.md).
    Here each 32-bit random integer gives two elements a 16-bit uniform: an element
    is kept with probability k / 2**16, k = round((1 - p) * 2**16), and scaled by
    2**16 / k, so the output's expectation is exactly the input. On a GPU torch's
    fused kernel is kept.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p, self.keep = p, round((1 - p) * 2**16)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        pairs = torch.randint(-(2**31), 2**31, ((x.numel() + 1) // 2,), dtype=torch.int32)
        uniform = pairs.view(torch.int16)[: x.numel()].view(x.shape)  # in [-2**15, 2**15)
        return x * (uniform < self.keep - 2**15).to(x.dtype).mul_(2**16 / self.keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Memory(NamedTuple):
    """The encoded source, identical for every decoding step."""

    values: Tensor  # (N, S, M) encoder states
    keys: Tensor  # (N, S, H) attention keys, projected once per batch
    mask: Tensor  # (N, S) True at real (non-pad) source positions

    def select(self, rows: Tensor) -> Memory:
        return Memory(self.values[rows], self.keys[rows], self.mask[rows])


class DecoderState(NamedTuple):
    """Everything the decoder carries from one step to the next."""

    h: Tensor  # (L, N, H)
    c: Tensor  # (L, N, H) memory cells
    feed: Tensor  # (N, H) attentional output of the previous step (input feeding)

    def select(self, rows: Tensor) -> DecoderState:
        return DecoderState(self.h[:, rows], self.c[:, rows], self.feed[rows])


class Attention(nn.Module):
    """Scores a query against precomputed keys; holds no per-batch state.

    dot: q.k; general: q.(W k); bahdanau: v.tanh(W k + U q). The key projection
    is applied once per batch by `project_keys`, not at every step.
    """

    def __init__(self, kind: str, query_dim: int, memory_dim: int):
        super().__init__()
        self.kind = kind
        self.key_proj = None if kind == "dot" else nn.Linear(memory_dim, query_dim, bias=False)
        if kind == "bahdanau":
            self.query_proj = nn.Linear(query_dim, query_dim, bias=False)
            self.energy = nn.Linear(query_dim, 1, bias=False)

    def project_keys(self, values: Tensor) -> Tensor:
        """(N, S, M) -> (N, S, H)."""
        return values if self.key_proj is None else self.key_proj(values)

    def forward(self, query: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """query (N, T, H) -> context (N, T, M) and weights (N, T, S).

        The memory may hold one row per group of consecutive query rows (the
        beams of a sentence share its memory): a group is scored in one matmul.
        """
        n, t, _ = query.shape
        query = query.reshape(memory.keys.size(0), -1, query.size(-1))  # (rows, N/rows*T, H)
        if self.kind == "bahdanau":
            hidden = torch.tanh(memory.keys[:, None] + self.query_proj(query)[:, :, None])
            scores = self.energy(hidden).squeeze(-1)
        else:
            scores = query @ memory.keys.transpose(1, 2)
        # fp32 before masking: -inf and softmax are unsafe in half precision
        scores = scores.float().masked_fill(~memory.mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        context = weights.to(memory.values.dtype) @ memory.values
        return context.reshape(n, t, -1), weights.reshape(n, t, -1)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, *, pad: int = 0):
        super().__init__()
        if cfg.share_embeddings and src_vocab != tgt_vocab:
            raise ValueError("model.share_embeddings needs a joint vocabulary (data.joint_vocab)")
        self.cfg, self.pad = cfg, pad
        memory_dim, hidden = 2 * cfg.enc_hidden, cfg.dec_hidden
        self.dropout = Dropout(cfg.dropout)

        self.src_embed = nn.Embedding(src_vocab, cfg.emb_dim, padding_idx=pad)
        self.encoder = nn.LSTM(
            cfg.emb_dim,
            cfg.enc_hidden,
            cfg.enc_layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.enc_layers > 1 else 0.0,
        )
        if cfg.bridge == "linear":
            self.bridge_h = nn.Linear(memory_dim, cfg.dec_layers * hidden)
            self.bridge_c = nn.Linear(memory_dim, cfg.dec_layers * hidden)

        self.tgt_embed = (
            self.src_embed
            if cfg.share_embeddings
            else nn.Embedding(tgt_vocab, cfg.emb_dim, padding_idx=pad)
        )
        decoder_input = cfg.emb_dim + (hidden if cfg.input_feed else 0)
        decoder_input += memory_dim if cfg.attention == "bahdanau" else 0
        self.decoder = nn.LSTM(
            decoder_input,
            hidden,
            cfg.dec_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.dec_layers > 1 else 0.0,
        )
        self.attention = Attention(cfg.attention, hidden, memory_dim)
        # the decoder's cell function, (layer, x, (h, c)) -> (h, c): `nmt inspect` swaps in
        # one that records the gates, `nmt.cpu_decode` one with prepared weights
        self.lstm_cell = self.torch_lstm_cell
        self.combine = nn.Linear(memory_dim + hidden, hidden, bias=False)

        # Tying needs the output layer's input to be E wide: project H -> E first.
        tie_proj = cfg.tie_embeddings and hidden != cfg.emb_dim
        self.out_proj = nn.Linear(hidden, cfg.emb_dim, bias=False) if tie_proj else None
        self.generator = nn.Linear(cfg.emb_dim if cfg.tie_embeddings else hidden, tgt_vocab)
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.generator.weight = self.tgt_embed.weight

    def reset_parameters(self) -> None:
        for param in self.parameters():
            nn.init.uniform_(param, -self.cfg.init_range, self.cfg.init_range)
        with torch.no_grad():
            self.src_embed.weight[self.pad].zero_()
            self.tgt_embed.weight[self.pad].zero_()

    @property
    def feeds_back(self) -> bool:
        """Whether each decoder step depends on the previous step's attention."""
        return self.cfg.input_feed or self.cfg.attention == "bahdanau"

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Memory, DecoderState]:
        """src (N, S) padded ids, src_len (N,) -> memory and the initial decoder state."""
        embedded, lengths = self.dropout(self.src_embed(src)), src_len.cpu()
        # nn.LSTM's cost on packed sequences is in its backward on a CPU, where it runs
        # per-step autograd ops; cuDNN runs them in one fused call, and without gradients
        # it was as fast as our layer in fp32 and faster in bf16 (docs/benchmarks.md)
        if src.is_cuda or not torch.is_grad_enabled():
            packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = self.encoder(packed)
            values, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        else:
            values, h, c = bidirectional_lstm(
                embedded, lengths, self.encoder, self.dropout, dtype=product_dtype(embedded)
            )
        memory = Memory(values, self.attention.project_keys(values), src != self.pad)
        return memory, self._initial_state(h, c, memory)

    def _initial_state(self, h: Tensor, c: Tensor, memory: Memory) -> DecoderState:
        layers, n, hidden = self.cfg.dec_layers, memory.values.size(0), self.cfg.dec_hidden
        # (2 * layers, N, He) -> (layers, N, M): forward || backward final states
        h = h.view(self.cfg.enc_layers, 2, n, -1).transpose(1, 2).reshape(-1, n, 2 * h.size(-1))
        c = c.view(self.cfg.enc_layers, 2, n, -1).transpose(1, 2).reshape(-1, n, 2 * c.size(-1))
        if self.cfg.bridge == "linear":
            h = torch.tanh(self.bridge_h(h[-1])).view(n, layers, hidden).transpose(0, 1)
            c = self.bridge_c(c[-1]).view(n, layers, hidden).transpose(0, 1)
        elif self.cfg.bridge == "zero":
            h = c = memory.values.new_zeros(layers, n, hidden)
        feed = memory.values.new_zeros(n, hidden)
        return DecoderState(h.contiguous(), c.contiguous(), feed)

    def forward(
        self,
        src: Tensor,
        src_len: Tensor,
        tgt_in: Tensor,
        tgt_out: Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """Teacher forcing: tgt_in (N, T) starts with BOS -> logits (N, T, V).

        Given tgt_out (N, T), the training loss instead: fp32 cross-entropy summed
        over its non-pad tokens, output layer and loss fused (`nmt.loss`).
        """
        out = self._attentional_outputs(src, src_len, tgt_in)
        if tgt_out is None:
            return self._logits(out)
        if self.out_proj is not None:
            out = self.out_proj(out)
        return projected_cross_entropy(
            out.flatten(0, 1),
            self.generator.weight,
            self.generator.bias,
            tgt_out.flatten(),
            ignore_index=self.pad,
            label_smoothing=label_smoothing,
            dtype=product_dtype(out),
        )

    def _attentional_outputs(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing up to the output layer: -> (N, T, H)."""
        memory, state = self.encode(src, src_len)
        embedded = self.dropout(self.tgt_embed(tgt_in))  # (N, T, E)
        if self._deferred_loop(embedded):
            # the same steps as `_step`, with the shared gradients summed after the loop
            out = input_feeding_loop(
                embedded,
                state.h,
                state.c,
                memory.keys,
                memory.values,
                memory.mask,
                self.decoder,
                self.combine.weight,
                self.dropout,
                dtype=product_dtype(embedded),
            )
        elif self.feeds_back:
            outputs = []
            # unbind, not embedded[:, t]: its backward is one stack, not T full-size zero fills
            for emb_t in embedded.unbind(1):
                out, state, _ = self._step(emb_t, state, memory)
                outputs.append(out)
            out = torch.stack(outputs, dim=1)
        else:
            # Without feedback the decoder LSTM runs over the whole target in one
            # fused call and attention is one batched matmul.
            hidden, _ = self.decoder(embedded, (state.h, state.c))  # (N, T, H)
            context, _ = self.attention(hidden, memory)
            out = self.dropout(torch.tanh(self.combine(torch.cat([context, hidden], -1))))
        return out

    def _deferred_loop(self, embedded: Tensor) -> bool:
        """Whether teacher forcing runs `recurrence.input_feeding_loop`: Luong attention
        with input feeding, where it was measured faster (docs/benchmarks.md): on a
        CPU, and on a GPU under AMP. A GPU in fp32 keeps the step-by-step path: the
        loop measured 0.84x there (CUDA's lstm_cell fuses the gate arithmetic into one
        kernel, the loop's cell does not: the likely reason)."""
        device = embedded.device.type
        return (
            self.cfg.input_feed
            and self.cfg.attention != "bahdanau"
            and (device == "cpu" or torch.is_autocast_enabled(device))
        )

    def decode_step(
        self, token: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One target token per row (N,) -> fp32 log-probabilities (N, V), the next
        state, and the step's attention weights over the source (N, S)."""
        out, state, attn = self._step(self.dropout(self.tgt_embed(token)), state, memory)
        return F.log_softmax(self._logits(out), dim=-1, dtype=torch.float32), state, attn

    def _step(
        self, embedded: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """embedded (N, E) -> attentional output (N, H), the next state, attention (N, S)."""
        inputs = [embedded]
        if self.cfg.attention == "bahdanau":  # attend with the previous hidden state
            context, attn = self.attention(state.h[-1][:, None], memory)
            inputs.append(context[:, 0])
        if self.cfg.input_feed:
            inputs.append(state.feed)
        h, c = self._lstm_step(torch.cat(inputs, -1), state.h, state.c)
        hidden = h[-1][:, None]  # (N, 1, H)
        if self.cfg.attention != "bahdanau":  # Luong: attend with the new hidden state
            context, attn = self.attention(hidden, memory)
        out = self.dropout(torch.tanh(self.combine(torch.cat([context, hidden], -1))))[:, 0]
        return out, DecoderState(h, c, out), attn[:, 0]

    def _lstm_step(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One time step of the decoder LSTM: x (N, I), h and c (L, N, H).

        Uses the fused cell kernel with `self.decoder`'s own weights: for one
        step it is faster than calling `nn.LSTM` on a length-1 sequence.
        """
        new_h, new_c = [], []
        for layer in range(self.cfg.dec_layers):
            if layer > 0:
                x = self.dropout(x)  # between layers, as nn.LSTM does
            h_layer, c_layer = self.lstm_cell(layer, x, (h[layer], c[layer]))
            new_h.append(h_layer)
            new_c.append(c_layer)
            x = h_layer
        return torch.stack(new_h), torch.stack(new_c)

    def torch_lstm_cell(self, layer: int, x: Tensor, state: tuple[Tensor, Tensor]):
        """The default cell function: torch's fused cell kernel, x (N, I), state (h, c)
        each (N, H) -> the next (h, c)."""
        return torch.lstm_cell(x, state, *self.decoder.all_weights[layer])

    def _logits(self, out: Tensor) -> Tensor:
        """(..., H) -> (..., V)."""
        if self.out_proj is not None:
            out = self.out_proj(out)
        return self.generator(out)

"""LSTM encoder-decoder with attention: Luong (dot, general) or Bahdanau (additive).

Shapes: N rows (batch * beam during search), S source length, T target length, E
embedding, H decoder hidden, M = 2 * encoder hidden (memory width), L decoder layers, V
vocabulary. Decoders: "stacked" (the top layer attends) and "parallel" (GNMT's: the bottom
layer attends, the context joins every upper layer). Four stages, each a plain reference
here that a plan's `Kernels` may steer to `nmt.kernels`: `encode` and `decode_step`
(search's calls; it re-indexes their tuples with `.select`), `forward` and `loss`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import ModelConfig
from nmt.kernels.cells import attention_weights
from nmt.kernels.dropout import uniform16_dropout
from nmt.kernels.fused_loss import projected_cross_entropy
from nmt.kernels.masked_lstm import masked_bidirectional_lstm
from nmt.kernels.packed_lstm import bidirectional_lstm
from nmt.kernels.parallel_decoder import parallel_decoder
from nmt.kernels.recurrence import input_feeding_loop
from nmt.plan import REFERENCE, Kernels


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


class StepLayers(NamedTuple):
    """The decoder step's products: the module's own (`Seq2Seq.step_layers`), or stand-ins
    with the same results that prepare them (`nmt.runtime.prepared`) or record the gates
    (`nmt.reporting.inside`)."""

    cell: Callable  # (layer, x (N, I), (h, c) each (N, H)) -> the next (h, c)
    combine: Callable  # (..., M + H) -> (..., H): the attentional layer before its tanh
    output: Callable  # (..., H) -> logits (..., V)


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
        weights = attention_weights(scores, memory.mask)
        context = weights.to(memory.values.dtype) @ memory.values
        return context.reshape(n, t, -1), weights.reshape(n, t, -1)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, *, pad: int = 0):
        super().__init__()
        if cfg.share_embeddings and src_vocab != tgt_vocab:
            raise ValueError("model.share_embeddings needs a joint vocabulary (data.joint_vocab)")
        self.cfg, self.pad = cfg, pad
        memory_dim, hidden = 2 * cfg.enc_hidden, cfg.dec_hidden

        def lstm(inputs: int, size: int, layers: int, **options) -> nn.LSTM:
            dropout = cfg.dropout if layers > 1 else 0.0  # between layers
            return nn.LSTM(inputs, size, layers, batch_first=True, dropout=dropout, **options)

        self.src_embed = nn.Embedding(src_vocab, cfg.emb_dim, padding_idx=pad)
        self.encoder = lstm(cfg.emb_dim, cfg.enc_hidden, cfg.enc_layers, bidirectional=True)
        if cfg.bridge == "linear":
            self.bridge_h = nn.Linear(memory_dim, cfg.dec_layers * hidden)
            self.bridge_c = nn.Linear(memory_dim, cfg.dec_layers * hidden)

        self.tgt_embed = self.src_embed
        if not cfg.share_embeddings:
            self.tgt_embed = nn.Embedding(tgt_vocab, cfg.emb_dim, padding_idx=pad)
        parallel = cfg.decoder == "parallel"
        decoder_input = cfg.emb_dim + (hidden if cfg.input_feed else 0)
        decoder_input += memory_dim if cfg.attention == "bahdanau" and not parallel else 0
        if parallel:  # one module a layer: the context joins every upper layer's input
            self.decoder = lstm(decoder_input, hidden, 1)
            upper = [lstm(hidden + memory_dim, hidden, 1) for _ in range(cfg.dec_layers - 1)]
            self.decoder_upper = nn.ModuleList(upper)
        else:
            self.decoder = lstm(decoder_input, hidden, cfg.dec_layers)
        self.attention = Attention(cfg.attention, hidden, memory_dim)
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

    def _dropout(self, kernels: Kernels) -> Callable[[Tensor], Tensor]:
        """Dropout as the kernels draw its masks; the identity in eval mode."""
        if not self.training or self.cfg.dropout == 0:
            return _identity
        if kernels.dropout == "uniform16":
            return functools.partial(uniform16_dropout, p=self.cfg.dropout)
        return functools.partial(F.dropout, p=self.cfg.dropout, training=True)

    # -- stage 1: the encoder --------------------------------------------------------------

    def encode(
        self, src: Tensor, src_len: Tensor, kernels: Kernels = REFERENCE
    ) -> tuple[Memory, DecoderState]:
        """src (N, S) padded ids, src_len (N,) -> memory and the initial decoder state."""
        drop = self._dropout(kernels)
        embedded = drop(self.src_embed(src))
        dtype = kernels.dtype or embedded.dtype
        if kernels.encoder == "masked":  # the lengths stay on the device (CUDA graphs)
            values, h, c = masked_bidirectional_lstm(
                embedded, src_len, self.encoder, drop, dtype=dtype
            )
        elif kernels.encoder == "packed":
            values, h, c = bidirectional_lstm(
                embedded, src_len.cpu(), self.encoder, drop, dtype=dtype
            )
        else:
            lengths = src_len.cpu()
            packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = self.encoder(packed)
            values, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
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

    # -- stage 2: one decoder step ---------------------------------------------------------

    def decode_step(
        self, token: Tensor, state: DecoderState, memory: Memory, layers: StepLayers | None = None
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One target token per row (N,) -> fp32 log-probabilities (N, V), the next
        state, and the step's attention weights over the source (N, S). `layers`: the
        step's products (default: this module's own)."""
        layers, drop = layers or self.step_layers(), self._dropout(REFERENCE)
        out, state, attn = self._step(drop(self.tgt_embed(token)), state, memory, layers, drop)
        return F.log_softmax(layers.output(out), dim=-1, dtype=torch.float32), state, attn

    def step_layers(self) -> StepLayers:
        return StepLayers(self._torch_cell, self.combine, self._output)

    def decoder_weights(self, layer: int) -> list[Tensor]:
        """Decoder layer `layer`'s [w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H,)], whichever
        the decoder: what the step's cell and its stand-ins multiply with."""
        if layer == 0 or self.cfg.decoder == "stacked":
            return self.decoder.all_weights[layer]
        return self.decoder_upper[layer - 1].all_weights[0]

    def _torch_cell(self, layer: int, x: Tensor, state: tuple[Tensor, Tensor]):
        # torch's fused cell kernel on the decoder's own weights: for one step it is
        # faster than nn.LSTM over a length-1 sequence
        return torch.lstm_cell(x, state, *self.decoder_weights(layer))

    def _output(self, out: Tensor) -> Tensor:
        """(..., H) -> logits (..., V)."""
        return self.generator(out if self.out_proj is None else self.out_proj(out))

    def _step(
        self, embedded: Tensor, state: DecoderState, memory: Memory, layers: StepLayers, drop
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """embedded (N, E) -> attentional output (N, H), the next state, attention (N, S).

        The query: stacked Bahdanau, the top layer's previous state (its context joins the
        bottom layer's input); stacked Luong, the top layer's new state; parallel, whatever
        the score, the bottom layer's new state (its context joins every upper layer's)."""
        parallel, inputs = self.cfg.decoder == "parallel", [embedded]
        query = "bottom" if parallel else "previous" if self.cfg.attention == "bahdanau" else "top"
        if query == "previous":
            context, attn = self.attention(state.h[-1][:, None], memory)
            inputs.append(context[:, 0])
        if self.cfg.input_feed:
            inputs.append(state.feed)
        x, new_h, new_c = torch.cat(inputs, -1), [], []
        for layer in range(self.cfg.dec_layers):
            if layer > 0:
                x = drop(x)  # between layers, as nn.LSTM does (on the context: never)
            if layer > 0 and parallel:
                x = torch.cat([x, context[:, 0]], -1)
            x, c_layer = layers.cell(layer, x, (state.h[layer], state.c[layer]))
            new_h.append(x)
            new_c.append(c_layer)
            if layer == 0 and query == "bottom":
                context, attn = self.attention(x[:, None], memory)
        h, c = torch.stack(new_h), torch.stack(new_c)
        hidden = h[-1][:, None]  # (N, 1, H)
        if query == "top":
            context, attn = self.attention(hidden, memory)
        out = drop(torch.tanh(layers.combine(torch.cat([context, hidden], -1))))[:, 0]
        return out, DecoderState(h, c, out), attn[:, 0]

    # -- stages 3 and 4: teacher forcing, the output layer and the loss ---------------------

    def forward(
        self, src: Tensor, src_len: Tensor, tgt_in: Tensor, kernels: Kernels = REFERENCE
    ) -> Tensor:
        """Teacher forcing: tgt_in (N, T) starts with BOS -> logits (N, T, V)."""
        return self._output(self._teacher_forced(src, src_len, tgt_in, kernels))

    def loss(
        self,
        src: Tensor,
        src_len: Tensor,
        tgt_in: Tensor,
        tgt_out: Tensor,
        *,
        label_smoothing: float = 0.0,
        kernels: Kernels = REFERENCE,
    ) -> Tensor:
        """Cross-entropy of tgt_out (N, T) summed over its non-pad tokens, in fp32
        (float64 for a float64 model)."""
        out = self._teacher_forced(src, src_len, tgt_in, kernels)
        options = {"ignore_index": self.pad, "label_smoothing": label_smoothing}
        if kernels.loss == "reference":
            logits = self._output(out).flatten(0, 1)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            return F.cross_entropy(logits, tgt_out.flatten(), reduction="sum", **options)
        out = (out if self.out_proj is None else self.out_proj(out)).flatten(0, 1)
        weight, bias, chunk = self.generator.weight, self.generator.bias, kernels.loss_chunk
        options.update(dtype=kernels.dtype or out.dtype, chunk_elements=chunk)
        return projected_cross_entropy(out, weight, bias, tgt_out.flatten(), **options)

    def _teacher_forced(self, src, src_len, tgt_in, kernels: Kernels) -> Tensor:
        """tgt_in (N, T) from BOS -> attentional outputs (N, T, H), before the output layer."""
        memory, state = self.encode(src, src_len, kernels)
        drop = self._dropout(kernels)
        embedded = drop(self.tgt_embed(tgt_in))  # (N, T, E)
        if kernels.teacher_forcing == "deferred":  # the stepwise loop's steps, in nmt.kernels
            assert self.cfg.input_feed and self.cfg.attention != "bahdanau", "Luong with feeding"
            dtype, combine = kernels.dtype or embedded.dtype, self.combine.weight
            return input_feeding_loop(
                embedded, state, memory, self.decoder, combine, drop, dtype=dtype
            )
        if kernels.teacher_forcing == "whole":
            # without feedback the decoder LSTM runs over the whole target in one fused
            # call, and attention is one batched matmul
            assert not self.cfg.input_feed and self.cfg.attention != "bahdanau", "no feedback"
            assert self.cfg.decoder == "stacked", "the parallel decoder has its own kernel"
            hidden, _ = self.decoder(embedded, (state.h, state.c))  # (N, T, H)
            context, _ = self.attention(hidden, memory)
            return drop(torch.tanh(self.combine(torch.cat([context, hidden], -1))))
        if kernels.teacher_forcing == "parallel":  # GNMT's decoder, each layer one call
            assert self.cfg.decoder == "parallel" and not self.cfg.input_feed, "GNMT's decoder"
            lstms, attention = [self.decoder, *self.decoder_upper], self.attention
            return parallel_decoder(embedded, state, memory, lstms, attention, self.combine, drop)
        layers, outputs = self.step_layers(), []
        # unbind, not embedded[:, t]: its backward is one stack, not T full-size zero fills
        for emb_t in embedded.unbind(1):
            out, state, _ = self._step(emb_t, state, memory, layers, drop)
            outputs.append(out)
        return torch.stack(outputs, dim=1)


def _identity(x: Tensor) -> Tensor:
    return x

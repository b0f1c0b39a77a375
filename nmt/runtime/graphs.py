"""The decoder step replayed as CUDA graphs: a launch and a few copies, not dozens of launches.

A step is dozens of small kernels on a few hundred rows: on a GPU the launches take most of
its time. `CapturedDecoder` (search's model interface) keeps per step shape (memory rows
A rounded up to a `nmt.plan.bucket` size, rows per sentence, source width, dtypes,
autocast state) static buffers that inputs are copied into and the graph's outputs are
copied out of; added rows are a one-position source with zero states. Capture runs inside
search's first call for a shape, under the same inference mode and autocast as replays.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from nmt.model import DecoderState, Memory
from nmt.plan import ROWS_STEP, bucket

Outputs = tuple  # a step's (logp (N, V), DecoderState, attn (N, S))
Step = Callable[[], Outputs]  # one decoder step on the static inputs
Replay = Callable[[], None]  # reruns the step, writing into the outputs it returned


class CudaGraphs:
    """Captures a step as a CUDA graph: `capture(step) -> (replay, outputs)`, where
    `outputs` are the graph's own tensors, rewritten by every `replay()`. All of one
    instance's graphs allocate from one memory pool: they replay one at a time, on one
    stream, and the outputs they keep are never freed, so one graph's temporaries may
    reuse another's; each graph keeps only its outputs (logp: P * R * V floats)."""

    def __init__(self, warmup: int = 3):
        self.pool = torch.cuda.graph_pool_handle()
        self.warmup = warmup

    def __call__(self, step: Step) -> tuple[Replay, Outputs]:
        # warm-up on a side stream, as torch's CUDA graph notes do: lazy set-up (cuBLAS
        # handles and workspaces, kernel choices) must happen before the capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = step()  # recorded, not run: the outputs hold nothing until a replay
        return graph.replay, outputs


class _StaticMemory:
    """One memory shape's buffers, (P, S, ...) with P >= A rows, shared by the graphs of
    that shape (R = 1 and R = K); refilled only when another Memory object arrives."""

    def __init__(self, like: Memory, rows: int):
        self.buffers = Memory(*(x.new_zeros(rows, *x.shape[1:]) for x in like))
        self.source: list[weakref.ref] = []  # the tensors of the memory copied in

    def fill(self, memory: Memory) -> bool:
        """Copies `memory` (A, S, ...) in unless it is the one already there -> whether it
        copied. By identity: search keeps one Memory between the batch's shrinks, and
        copying it at every step would cost about as much as the step. Weak references:
        a finished batch's memory is freed, not held for the next batch of this shape."""
        if len(self.source) == len(memory) and all(
            ref() is x for ref, x in zip(self.source, memory, strict=True)
        ):
            return False
        A, (values, keys, mask) = memory.values.size(0), self.buffers
        for buffer, x in zip(self.buffers, memory, strict=True):
            buffer[:A].copy_(x)
        # the added rows: a source of one position (softmax over it is defined), zeros
        values[A:].zero_()
        keys[A:].zero_()
        mask[A:] = False
        mask[A:, 0] = True
        self.source = [weakref.ref(x) for x in memory]
        return True


class StepKey(NamedTuple):
    """What a captured step is for: a step of another key needs another graph."""

    rows: int  # memory rows P: the batch's sentences A rounded up to a bucket size
    per_sentence: int  # state rows per memory row R: 1 at beam search's first step, else K
    width: int  # source positions S
    dtypes: tuple  # of the memory's and the state's tensors
    autocast: tuple  # (enabled, dtype): a graph replays the casts it was captured with


class _Graph(NamedTuple):
    """One step shape's static inputs (P * R rows), its replay and its outputs."""

    token: Tensor  # (P * R,)
    state: DecoderState  # h, c (L, P * R, H), feed (P * R, H)
    replay: Replay
    outputs: Outputs  # logp (P * R, V), DecoderState, attn (P * R, S): the graph's


class CapturedDecoder:
    """`decoder` (a Seq2Seq in eval mode, or a wrapper with its interface) whose
    `decode_step` replays a graph captured per `StepKey`; `encode` is the decoder's.
    Runs under `torch.inference_mode`, as `nmt.decoding` and `Translator` call it: its
    buffers are made there.

    `capture`: how a step is captured, `capture(step) -> (replay, outputs)`; default
    `CudaGraphs()`. Anything with that call works: the CPU tests pass one that runs the
    step eagerly. Past `max_graphs` keys a step of a new key runs eagerly, so that an
    odd workload cannot hold GPU memory without bound. Attributes: `graphs`, the
    captured steps by key; `memories`, the static memories by (P, S, dtypes);
    `memory_loads`, how many memories were copied in."""

    def __init__(
        self,
        decoder,
        capture: Callable[[Step], tuple[Replay, Outputs]] | None = None,
        max_graphs: int = 128,
    ):
        self.decoder, self.max_graphs = decoder, max_graphs
        self.capture = capture or CudaGraphs()
        self.graphs: dict[StepKey, _Graph] = {}
        self.memories: dict[tuple, _StaticMemory] = {}
        self.memory_loads = 0

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Memory, DecoderState]:
        return self.decoder.encode(src, src_len)

    def decode_step(
        self, token: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """token (N,), state (N rows), memory (A rows, N = A * R) -> fresh logp (N, V),
        the next state (N rows) and attention (N, S), as the decoder's own step."""
        A, N, S = memory.values.size(0), token.size(0), memory.values.size(1)
        dtypes = tuple(x.dtype for x in (*memory, *state))
        key = StepKey(bucket(A, ROWS_STEP), N // A, S, dtypes, _autocast(memory.values))
        graph = self.graphs.get(key)
        if graph is None and len(self.graphs) >= self.max_graphs:
            return self.decoder.decode_step(token, state, memory)
        shape = (key.rows, S, dtypes)  # R = 1 and R = K share the memory
        static = self.memories.get(shape)
        if static is None:
            static = self.memories[shape] = _StaticMemory(memory, key.rows)
        self.memory_loads += static.fill(memory)

        if graph is None:  # the warm-up steps of a capture run on these inputs
            inputs = _zeros_like(token, state, key.rows * key.per_sentence)
            _copy_in(*inputs, token, state)
            graph = self.graphs[key] = self._capture(*inputs, static.buffers)
        else:
            _copy_in(graph.token, graph.state, token, state)
        graph.replay()

        # copies: the next replay rewrites the graph's outputs, and search edits logp
        logp, out, attn = graph.outputs
        state = DecoderState(out.h[:, :N].clone(), out.c[:, :N].clone(), out.feed[:N].clone())
        return logp[:N].clone(), state, None if attn is None else attn[:N].clone()

    def _capture(self, token: Tensor, state: DecoderState, memory: Memory) -> _Graph:
        def step() -> Outputs:
            return self.decoder.decode_step(token, state, memory)

        return _Graph(token, state, *self.capture(step))


def _zeros_like(token: Tensor, state: DecoderState, rows: int) -> tuple[Tensor, DecoderState]:
    """Input buffers of `rows` rows like `token` and `state`. Zero states and token 0
    (PAD: a zero embedding) keep the added rows finite."""
    h, c = (x.new_zeros(x.size(0), rows, x.size(2)) for x in (state.h, state.c))
    feed = state.feed.new_zeros(rows, state.feed.size(1))
    return token.new_zeros(rows), DecoderState(h, c, feed)


def _copy_in(static_token: Tensor, static: DecoderState, token: Tensor, state: DecoderState):
    """The step's N rows into the first N rows of the static inputs; the rest keep what
    they held (zeros, or rows of an earlier step: finite either way)."""
    N = token.size(0)
    static_token[:N].copy_(token)
    static.h[:, :N].copy_(state.h)
    static.c[:, :N].copy_(state.c)
    static.feed[:N].copy_(state.feed)


def _autocast(x: Tensor) -> tuple[bool, torch.dtype]:
    """Whether autocast is on for x's device, and its dtype: a graph keeps the casts it
    was captured with, so a step under another autocast needs another graph."""
    kind = x.device.type
    return torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)

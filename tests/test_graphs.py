"""The decoder step replayed as graphs (`nmt.runtime.graphs`): the wrapper's buffers,
padding, slicing and memory caching are checked on the CPU with a stand-in that
"captures" by running the step and "replays" by running it again into the first
outputs (a CUDA graph's semantics: fixed buffers, outputs rewritten in place); the
real capture on a GPU (the `gpu` tests)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import nmt.loading
from nmt import checkpoint
from nmt.ensemble import Ensemble
from nmt.plan import ROWS_STEP, DeviceError, bucket, plan_for
from nmt.runtime.graphs import CapturedDecoder
from nmt.translate import Translator
from tests.conftest import make_pairs

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
RUNS = ["trained_run", "trained_parallel_run"]  # one decoder layer; two (GNMT's)
# short and long sentences in one batch: they finish at different steps, so the batch
# shrinks through several row buckets (24, 16, 8) and within each
LINES = [src for src, _ in make_pairs(24, seed=11)]


def step_tensors(outputs) -> list[torch.Tensor]:
    logp, state, attn = outputs
    return [logp, *state, attn]


class EagerGraphs:
    """A CPU stand-in for `CudaGraphs`: the outputs it returns are rewritten by each
    replay, as a graph's are, and it counts its captures."""

    def __init__(self):
        self.captures = 0

    def __call__(self, step):
        self.captures += 1
        outputs = step()

        def replay():
            for static, fresh in zip(step_tensors(outputs), step_tensors(step()), strict=True):
                static.copy_(fresh)

        return replay, outputs


class Spy:
    """Passes a decoder's calls through, noting each step's (memory rows, state rows)
    and each Memory object search hands it."""

    def __init__(self, decoder):
        self.decoder, self.shapes, self.memories = decoder, [], []

    def encode(self, src, src_len):
        return self.decoder.encode(src, src_len)

    def decode_step(self, token, state, memory):
        self.shapes.append((memory.values.size(0), token.size(0)))
        if not any(m is memory for m in self.memories):
            self.memories.append(memory)
        return self.decoder.decode_step(token, state, memory)


def translators(run, monkeypatch, ensemble: bool = False) -> tuple[Translator, Translator]:
    """(plain, captured) translators of the run's model on the CPU, the captured one
    wired by its plan (graphs) with the eager stand-in for CUDA graphs."""
    cfg, model, tokenizers, _ = checkpoint.load(run / "best.pt")
    model.eval()
    if ensemble:  # two members: the same weights, so that the ensemble is checkable
        model = Ensemble([model, checkpoint.load(run / "best.pt").model])
    plain = Translator(model, tokenizers, cfg)
    monkeypatch.setattr(nmt.loading, "CudaGraphs", EagerGraphs)
    captured = Translator(model, tokenizers, cfg, dataclasses.replace(plain.plan, graphs=True))
    return plain, captured


def assert_same_hypotheses(found, exact) -> None:
    """The same tokens and alignments, scores equal to fp32 rounding (a step on padded
    rows may multiply in another order)."""
    for a, b in zip(found, exact, strict=True):
        assert [(h.tokens, h.alignment) for h in a] == [(h.tokens, h.alignment) for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        assert [h.logprob for h in a] == pytest.approx([h.logprob for h in b], abs=1e-5)


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("beam", [1, 5])
def test_captured_translations_are_the_models(run, beam, request, monkeypatch):
    plain, captured = translators(request.getfixturevalue(run), monkeypatch)
    assert isinstance(captured.decoder, CapturedDecoder)

    found = captured.translate(LINES, beam=beam, nbest=min(beam, 2), max_tokens=10_000)

    exact = plain.translate(LINES, beam=beam, nbest=min(beam, 2), max_tokens=10_000)
    assert_same_hypotheses(found, exact)
    decoder = captured.decoder
    assert len({key.rows for key in decoder.graphs}) >= 3  # the batch crossed row buckets
    assert decoder.memory_loads > len(decoder.memories)  # and shrank within one


def test_an_ensemble_of_captured_members_translates_as_the_ensemble(trained_run, monkeypatch):
    plain, captured = translators(trained_run, monkeypatch, ensemble=True)
    assert all(isinstance(m, CapturedDecoder) for m in captured.decoder.models)

    found = captured.translate(LINES[:12], beam=3)

    assert_same_hypotheses(found, plain.translate(LINES[:12], beam=3))


@pytest.mark.parametrize("beam", [1, 5])
def test_few_graphs_serve_a_shrinking_batch_and_each_memory_is_copied_once(
    trained_run, beam, monkeypatch
):
    _, captured = translators(trained_run, monkeypatch)
    spy = captured.decoder = Spy(captured.decoder)

    captured.translate(LINES, beam=beam, max_tokens=10_000)

    decoder = spy.decoder
    shapes = {(rows, state_rows // rows) for rows, state_rows in spy.shapes}
    buckets = {(bucket(rows, ROWS_STEP), per) for rows, per in shapes}
    assert {(key.rows, key.per_sentence) for key in decoder.graphs} == buckets
    assert len(decoder.graphs) == decoder.capture.captures == len(buckets) < len(shapes)
    assert all(key.rows % 8 == 0 for key in decoder.graphs)
    # once per Memory object search handed in (once per shrink), not once per step
    assert decoder.memory_loads == len(spy.memories) < len(spy.shapes)
    loads, steps = decoder.memory_loads, len(spy.shapes)
    captured.translate([LINES[0]], beam=beam)  # one sentence: it never shrinks
    assert decoder.memory_loads == loads + 1 and len(spy.shapes) > steps + 3


def test_steps_of_new_shapes_past_the_graph_limit_run_eagerly(trained_run):
    cfg, model, tokenizers, _ = checkpoint.load(trained_run / "best.pt")
    plain = Translator(model.eval(), tokenizers, cfg)
    captured = Translator(model, tokenizers, cfg)
    captured.decoder = CapturedDecoder(model, EagerGraphs(), max_graphs=2)

    found = captured.translate(LINES, beam=5, max_tokens=10_000)

    assert_same_hypotheses(found, plain.translate(LINES, beam=5, max_tokens=10_000))
    assert len(captured.decoder.graphs) == captured.decoder.capture.captures == 2


@pytest.mark.parametrize("run", RUNS)
def test_a_steps_outputs_are_its_own_and_the_added_rows_stay_finite(run, request):
    _, model, tokenizers, _ = checkpoint.load(request.getfixturevalue(run) / "best.pt")
    model.eval()
    captured = CapturedDecoder(model, EagerGraphs())
    src = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0], [9, 10, 3, 0]])
    src_len, first = torch.tensor([4, 2, 3]), torch.full((3,), 2)

    with torch.inference_mode():
        memory, state = captured.encode(src, src_len)
        step = captured.decode_step(first, state, memory)
        step[0].add_(1.0)  # search edits logp in place
        token = step[0].argmax(-1)
        second = captured.decode_step(token, step[1], memory)
        exact = model.decode_step(first, state, memory)
        exact[0].add_(1.0)
        exact_second = model.decode_step(token, exact[1], memory)

    # the first step's outputs as they were: the second replay wrote into its own copies
    for found, want in zip(step_tensors(step), step_tensors(exact), strict=True):
        assert found.shape == want.shape
        torch.testing.assert_close(found, want, rtol=1e-5, atol=1e-5)
    for found, want in zip(step_tensors(second), step_tensors(exact_second), strict=True):
        assert found.shape == want.shape
        torch.testing.assert_close(found, want, rtol=1e-5, atol=1e-5)
    for graph in captured.graphs.values():  # 3 real rows of 8: the added ones are finite
        assert all(x.isfinite().all() for x in step_tensors(graph.outputs))


def test_graphs_are_refused_on_a_cpu_and_off_by_default(trained_run):
    cfg, _, _, _ = checkpoint.load(trained_run / "best.pt")

    with pytest.raises(DeviceError, match="CUDA"):
        Translator.load(trained_run, graphs=True, precision="fp32")

    assert not Translator.load(trained_run, precision="fp32").plan.graphs
    # an inference plan asks the device nothing in fp32: a CUDA device needs no GPU here
    cuda = torch.device("cuda")
    assert plan_for(cuda, "fp32", training=False, model=cfg.model, graphs=True).graphs


# -- on a GPU: captured for real --------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("rows", [3, 10])
@pytest.mark.parametrize("run", RUNS)
def test_cuda_graph_steps_are_the_models_steps(run, rows, request):
    _, model, _, _ = checkpoint.load(request.getfixturevalue(run) / "best.pt", "cuda")
    model.eval()
    captured = CapturedDecoder(model)
    g = torch.Generator().manual_seed(rows)
    src = torch.randint(4, 60, (rows, 9), generator=g)
    src_len = torch.randint(2, 10, (rows,), generator=g)
    src[torch.arange(9) >= src_len[:, None]] = 0
    src, token = src.cuda(), torch.full((rows,), 2, device="cuda")

    with torch.inference_mode():
        memory, state = captured.encode(src, src_len)
        exact_state = state
        for _ in range(4):
            logp, state, attn = captured.decode_step(token, state, memory)
            exact = model.decode_step(token, exact_state, memory)
            for found, want in zip((logp, *state, attn), step_tensors(exact), strict=True):
                torch.testing.assert_close(found, want, rtol=1e-5, atol=1e-5)
            token, exact_state = exact[0].argmax(-1), exact[1]

    assert len(captured.graphs) == 1 and captured.memory_loads == 1


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("beam", [1, 5])
def test_captured_search_on_a_gpu_is_eager_search(trained_run, precision, beam):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    options = {"device": "cuda", "precision": precision}
    eager = Translator.load(trained_run, **options, precision="fp32")
    captured = Translator.load(trained_run, **options, graphs=True, precision="fp32")
    assert isinstance(captured.decoder, CapturedDecoder)

    found = captured.translate(LINES, beam=beam, max_tokens=10_000)

    exact = eager.translate(LINES, beam=beam, max_tokens=10_000)
    assert len(captured.decoder.graphs) >= 2  # shrinking: first steps and later ones
    if precision == "fp32":
        assert_same_hypotheses(found, exact)
        return
    # bf16: padded rows may pick other GEMM kernels, whose bf16 results round differently
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(found, exact, strict=True))
    assert same >= 0.9 * len(LINES)
    gaps = [abs(a[0].logprob - b[0].logprob) for a, b in zip(found, exact, strict=True)]
    assert sum(gaps) / len(gaps) < 0.02

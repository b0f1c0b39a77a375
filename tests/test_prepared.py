"""Decoder products prepared for CPU translation: packed fp32 agrees with torch's
products to rounding, int8 is close product by product, and both give the same
translations."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nmt import checkpoint
from nmt.model import Seq2Seq
from nmt.plan import PrecisionError, int8_available, packed_fp32_available, plan_for
from nmt.runtime.prepared import FusedLSTMCell, Int8Linear, PackedLinear, PreparedModel
from nmt.tokenizer import PAD
from nmt.translate import Translator
from tests.conftest import make_pairs

needs_int8 = pytest.mark.skipif(not int8_available(), reason="no quantized CPU operators")
needs_packed = pytest.mark.skipif(
    not packed_fp32_available(), reason="no oneDNN prepacked fp32 linear"
)


def relative_error(found: torch.Tensor, exact: torch.Tensor) -> float:
    return ((found - exact).norm() / exact.norm()).item()


def assert_same_translations(found: Translator, exact: Translator, lines: list[str], beam: int):
    """The same best outputs, with log-probabilities equal to fp32 rounding."""
    a, b = found.translate(lines, beam=beam), exact.translate(lines, beam=beam)
    assert [h[0].text for h in a] == [h[0].text for h in b]
    assert [h[0].logprob for h in a] == pytest.approx([h[0].logprob for h in b], abs=1e-4)


@needs_packed
@pytest.mark.parametrize("with_bias", [True, False])
def test_a_packed_linear_layer_equals_torch_linear_to_rounding(with_bias):
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(300, 128, generator=g), torch.randn(300, generator=g)
    bias = bias if with_bias else None
    layer = PackedLinear(weight, bias)

    for shape in [(1, 128), (7, 128), (600, 128), (5, 1, 128)]:  # rows other than packed for
        x = torch.randn(*shape, generator=g)
        found, exact = layer(x), F.linear(x, weight, bias)
        assert found.shape == exact.shape
        torch.testing.assert_close(found, exact, rtol=1e-5, atol=1e-4)


@needs_packed
def test_the_packed_cell_equals_torch_lstm_cell_to_rounding():
    lstm = torch.nn.LSTM(48, 32, num_layers=2)
    g = torch.Generator().manual_seed(1)
    h, c = (torch.randn(6, 32, generator=g) for _ in range(2))
    cell = FusedLSTMCell(lstm.all_weights, PackedLinear)

    for layer, weights in enumerate(lstm.all_weights):
        x = torch.randn(6, 48 if layer == 0 else 32, generator=g)
        found = cell(layer, x, (h, c))
        exact = torch.lstm_cell(x, (h, c), *weights)
        for a, b in zip(found, exact, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# a trained model of each decoder: "stacked" (one layer) and "parallel" (GNMT's, two layers)
RUNS = ["trained_run", "trained_parallel_run"]


@needs_packed
@pytest.mark.parametrize("run", RUNS)
def test_loaded_fp32_translations_are_those_of_the_unprepared_model(run, request):
    trained_run = request.getfixturevalue(run)
    loaded = Translator.load(trained_run, precision="fp32")  # prepared: the model is frozen
    assert isinstance(loaded.decoder, PreparedModel)
    assert isinstance(loaded.decoder.layers.combine, PackedLinear)
    cfg, model, tokenizers, _ = checkpoint.load(trained_run / "best.pt")
    plain = Translator(model.eval(), tokenizers, cfg)
    assert plain.decoder is plain.model
    lines = [src for src, _ in make_pairs(60, seed=7)]

    for beam in (1, 5):
        assert_same_translations(loaded, plain, lines, beam)


@needs_packed
@pytest.mark.parametrize(
    "shape",
    [
        ["model.dec_layers=2", "model.enc_layers=2", "model.tie_embeddings=false"],
        ["model.attention=bahdanau", "model.input_feed=false", "model.bridge=zero"],
        ["model.decoder=parallel", "model.input_feed=false", "model.dec_layers=3"],
        ["model.decoder=parallel", "model.input_feed=false", "model.dec_layers=2"]
        + ["model.attention=bahdanau", "model.tie_embeddings=false"],
    ],
)
def test_prepared_fp32_decodes_other_shapes_as_the_unprepared_model(trained_run, shape):
    cfg, _, tokenizers, _ = checkpoint.load(trained_run / "best.pt")
    cfg = cfg.replace(shape)
    torch.manual_seed(0)  # untrained weights: the comparison needs no training
    model = Seq2Seq(cfg.model, *map(len, tokenizers), pad=PAD).eval()
    plain = Translator(model, tokenizers, cfg)
    plan = plan_for(torch.device("cpu"), "fp32", training=False, model=cfg.model, prepared=True)
    prepared = Translator(model, tokenizers, cfg, plan)
    assert isinstance(prepared.decoder, PreparedModel)
    assert_same_translations(prepared, plain, [src for src, _ in make_pairs(20, seed=5)], beam=3)


def test_a_translator_over_a_model_in_training_follows_its_weight_updates(trained_run):
    # what `nmt train` validates with: preparing (snapshotting) its weights would be wrong
    cfg, model, tokenizers, _ = checkpoint.load(trained_run / "best.pt")
    translator = Translator(model.eval(), tokenizers, cfg)
    line = [make_pairs(1, seed=3)[0][0]]
    piece = len(tokenizers[1]) - 1  # an ordinary piece, not EOS
    before = translator.translate(line, beam=1)[0][0]

    with torch.no_grad():  # an update that makes one piece win at every step
        model.generator.bias[piece] += 1e4

    after = translator.translate(line, beam=1)[0][0]
    assert set(before.tokens) != {piece}
    assert set(after.tokens) == {piece}


@needs_int8
def test_an_int8_linear_layer_is_within_the_error_of_7_bit_activations():
    # activations are rounded to steps of max|x| / 63: for a Gaussian, ~1.6% noise
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(300, 128, generator=g), torch.randn(300, generator=g)
    weight[:10] *= 50  # rows of very different ranges: each row has its own scale
    x = torch.randn(40, 128, generator=g)

    found = Int8Linear(weight, bias)(x)

    exact = F.linear(x, weight, bias)
    assert relative_error(found, exact) < 0.025
    assert relative_error(found[:, 10:], exact[:, 10:]) < 0.025  # not swamped by the big rows


@needs_int8
def test_the_int8_cell_follows_torch_lstm_cell():
    lstm = torch.nn.LSTM(48, 32, num_layers=2)
    g = torch.Generator().manual_seed(1)
    x, h, c = (torch.randn(6, n, generator=g) for n in (48, 32, 32))
    cell = FusedLSTMCell(lstm.all_weights, Int8Linear)

    for layer, weights in enumerate(lstm.all_weights):
        inputs = x if layer == 0 else torch.randn(6, 32, generator=g)
        found = cell(layer, inputs, (h, c))
        exact = torch.lstm_cell(inputs, (h, c), *weights)
        for a, b in zip(found, exact, strict=True):
            assert (a - b).abs().max().item() < 0.05  # gates and states are within (-1, 1)


@needs_int8
@pytest.mark.parametrize("run", RUNS)
def test_int8_translations_match_fp32(run, request):
    trained_run = request.getfixturevalue(run)
    lines = [src for src, _ in make_pairs(60, seed=7)]
    fp32 = Translator.load(trained_run, precision="fp32").translate(lines, beam=5)
    int8 = Translator.load(trained_run, precision="int8").translate(lines, beam=5)

    same = sum(a[0].text == b[0].text for a, b in zip(fp32, int8, strict=True))
    assert same >= 0.9 * len(lines)
    logprobs = torch.tensor([[a[0].logprob, b[0].logprob] for a, b in zip(fp32, int8, strict=True)])
    assert (logprobs[:, 0] - logprobs[:, 1]).abs().mean() < 0.05


@needs_int8
def test_int8_decodes_on_the_cpu_only(trained_run):
    cfg, _, _, _ = checkpoint.load(trained_run / "best.pt")
    with pytest.raises(PrecisionError, match="CPU only"):
        plan_for(torch.device("meta"), "int8", training=False, model=cfg.model)


@needs_int8
def test_cli_int8_keeps_one_line_per_input_line(trained_run):
    lines = ["Der hund läuft.", "", "Ein kind."]
    out = subprocess.run(
        [sys.executable, "-m", "nmt", "-q", "translate", str(trained_run), "--precision", "int8"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(out.splitlines()) == len(lines)
    assert out.splitlines()[1] == ""


@needs_int8
def test_evaluate_model_translates_in_the_precision_asked_for(trained_run, tmp_path, monkeypatch):
    import nmt.loading
    from nmt.cli import main

    prepared = []

    class Recorded(PreparedModel):
        def __init__(self, model, kind):
            prepared.append(kind)
            super().__init__(model, kind)

    monkeypatch.setattr(nmt.loading, "PreparedModel", Recorded)
    pairs = make_pairs(20, seed=9)
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    src.write_text("".join(s + "\n" for s, _ in pairs))
    ref.write_text("".join(t + "\n" for _, t in pairs))
    args = ["evaluate", "--model", str(trained_run), "--src", str(src), "--ref", str(ref)]
    main([*args, "--metrics", "bleu", "--precision", "int8", "-o", str(tmp_path / "report.json")])

    assert prepared == ["int8"]  # the one model was translated in int8
    assert len((tmp_path / "report.hyp").read_text().splitlines()) == len(pairs)

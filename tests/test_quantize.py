"""int8 translation: close to fp32 product by product, and the same translations."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nmt.model import PrecisionError
from nmt.quantize import Int8Linear, Int8LSTMCell, quantize_decoder
from nmt.translate import Translator
from tests.conftest import make_pairs

pytestmark = pytest.mark.skipif(
    not hasattr(torch.ops.quantized, "linear_dynamic"), reason="no quantized CPU operators"
)


def relative_error(found: torch.Tensor, exact: torch.Tensor) -> float:
    return ((found - exact).norm() / exact.norm()).item()


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


def test_the_int8_cell_follows_torch_lstm_cell():
    lstm = torch.nn.LSTM(48, 32, num_layers=2)
    g = torch.Generator().manual_seed(1)
    x, h, c = (torch.randn(6, n, generator=g) for n in (48, 32, 32))
    cell = Int8LSTMCell(lstm)

    for layer, weights in enumerate(lstm.all_weights):
        inputs = x if layer == 0 else torch.randn(6, 32, generator=g)
        found = cell(inputs, (h, c), *weights)
        exact = torch.lstm_cell(inputs, (h, c), *weights)
        for a, b in zip(found, exact, strict=True):
            assert (a - b).abs().max().item() < 0.05  # gates and states are within (-1, 1)


def test_int8_translations_match_fp32(trained_run):
    lines = [src for src, _ in make_pairs(60, seed=7)]
    fp32 = Translator.load(trained_run).translate(lines, beam=5)
    int8 = Translator.load(trained_run, precision="int8").translate(lines, beam=5)

    same = sum(a[0].text == b[0].text for a, b in zip(fp32, int8, strict=True))
    assert same >= 0.9 * len(lines)
    logprobs = torch.tensor([[a[0].logprob, b[0].logprob] for a, b in zip(fp32, int8, strict=True)])
    assert (logprobs[:, 0] - logprobs[:, 1]).abs().mean() < 0.05


def test_int8_only_quantizes_a_model_on_the_cpu(trained_run):
    model = Translator.load(trained_run).model.to("meta")
    with pytest.raises(PrecisionError, match="CPU only"):
        quantize_decoder(model)


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


def test_evaluate_model_translates_in_the_precision_asked_for(trained_run, tmp_path, monkeypatch):
    import nmt.translate
    from nmt.cli import main

    quantized = []
    monkeypatch.setattr(
        nmt.translate, "quantize_decoder", lambda model: quantized.append(quantize_decoder(model))
    )
    pairs = make_pairs(20, seed=9)
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    src.write_text("".join(s + "\n" for s, _ in pairs))
    ref.write_text("".join(t + "\n" for _, t in pairs))
    args = ["evaluate", "--model", str(trained_run), "--src", str(src), "--ref", str(ref)]
    main([*args, "--metrics", "bleu", "--precision", "int8", "-o", str(tmp_path / "report.json")])

    assert len(quantized) == 1  # the one model was translated in int8
    assert len((tmp_path / "report.hyp").read_text().splitlines()) == len(pairs)

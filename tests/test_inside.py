from __future__ import annotations

import base64
import re

import pytest
import torch

from nmt.cli import main
from nmt.reporting.figures import pyplot
from nmt.reporting.inside import UNITS_SHOWN, GateRecorder, figures, inspect_sentence, moving_units
from nmt.tokenizer import BOS, EOS
from nmt.translate import Translator


@pytest.fixture(scope="module")
def inspection(trained_run):
    return inspect_sentence(
        Translator.load(trained_run, precision="fp32"), "Der hund sieht eine katze.", beam=3
    )


def test_the_attention_picture_has_a_row_per_output_piece_each_summing_to_one(inspection):
    attention = inspection.attention

    assert attention.shape == (len(inspection.out_pieces), len(inspection.src_pieces))
    torch.testing.assert_close(attention.sum(-1), torch.ones(attention.size(0)))
    assert (attention >= 0).all()


def test_the_gate_recorder_decodes_as_the_model_and_records_its_states(trained_run, inspection):
    translator = Translator.load(trained_run, precision="fp32")
    model = translator.model
    src_ids = translator.encode([inspection.sentence])[0]
    src, src_len = torch.tensor([src_ids]), torch.tensor([len(src_ids)])
    hyp = translator.translate([inspection.sentence], beam=3)[0][0]
    recorder = GateRecorder(model)

    memory, state = recorder.encode(src, src_len)
    own_memory, own_state = model.encode(src, src_len)
    total, hidden = 0.0, []
    for token, following in zip([BOS, *hyp.tokens], [*hyp.tokens, EOS], strict=True):
        logp, state, _ = recorder.decode_step(torch.tensor([token]), state, memory)
        own_logp, own_state, _ = model.decode_step(torch.tensor([token]), own_state, own_memory)
        torch.testing.assert_close(logp, own_logp, rtol=1e-5, atol=1e-5)
        total += logp[0, following].item()
        hidden.append(own_state.h[-1])

    assert total == pytest.approx(hyp.logprob, abs=1e-3)  # what the translation scored
    recorded = torch.cat([h for layer, _, _, h in recorder.calls if layer == 0])
    torch.testing.assert_close(recorded, torch.cat(hidden), rtol=1e-5, atol=1e-6)
    trace = inspection.decoder
    assert trace.input.shape == trace.cell.shape == (len(inspection.out_pieces), 128)
    for gate in (trace.input, trace.forget, trace.output):
        assert ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(trace.hidden, trace.output * trace.cell.tanh())  # h = o tanh(c)
    assert inspection.encoder["forward"].cell.shape[0] == len(inspection.src_pieces)


def test_inspect_writes_a_page_with_the_pictures_embedded(trained_run, tmp_path):
    page = tmp_path / "inside.html"

    main(["-q", "inspect", str(trained_run), "Ein mann sieht den ball.", "-o", str(page)])

    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page.read_text())
    assert len(images) == 3
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)


def test_the_gate_picture_draws_the_units_that_move_most_with_legends_outside(inspection):
    figs = figures(inspection)
    fig = figs["gates"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    assert all(len(ax.get_lines()) == UNITS_SHOWN for ax in fig.axes)  # units, not a mean
    first = {line.get_label() for line in fig.axes[0].get_lines()}  # encoder, forward
    units = moving_units(inspection.encoder["forward"], UNITS_SHOWN).tolist()
    assert first == {f"unit {u}" for u in units}
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 3  # one per column: encoder forward, backward, decoder
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    for each in figs.values():
        pyplot().close(each)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_inspecting_leaves_the_translator_as_it_was(trained_run, precision):
    translator = Translator.load(trained_run, precision=precision)
    lines = ["Der hund sieht eine katze.", "Ein mann läuft."]
    before = translator.translate(lines, beam=3)

    inspect_sentence(translator, lines[0], beam=3)

    after = translator.translate(lines, beam=3)
    assert [h[0].score for h in after] == [h[0].score for h in before]  # bit for bit


def test_the_gates_of_the_parallel_decoder_are_its_top_layer_s(trained_parallel_run):
    translator = Translator.load(trained_parallel_run, precision="fp32")
    model, sentence = translator.model, "Der hund sieht eine katze."
    assert model.cfg.decoder == "parallel" and model.cfg.dec_layers == 2
    inspection = inspect_sentence(translator, sentence, beam=3)
    src_ids = translator.encode([sentence])[0]
    src, src_len = torch.tensor([src_ids]), torch.tensor([len(src_ids)])
    recorder = GateRecorder(model)

    memory, state = recorder.encode(src, src_len)
    own_memory, own_state = model.encode(src, src_len)
    hidden = []
    for token in [BOS, *translator.translate([sentence], beam=3)[0][0].tokens]:
        logp, state, _ = recorder.decode_step(torch.tensor([token]), state, memory)
        own_logp, own_state, _ = model.decode_step(torch.tensor([token]), own_state, own_memory)
        torch.testing.assert_close(logp, own_logp, rtol=1e-5, atol=1e-5)
        hidden.append(own_state.h)

    assert [layer for layer, *_ in recorder.calls] == [0, 1] * len(hidden)
    for layer in (0, 1):
        recorded = torch.cat([h for at, _, _, h in recorder.calls if at == layer])
        torch.testing.assert_close(recorded, torch.cat([h[layer] for h in hidden]))
    trace = inspection.decoder
    torch.testing.assert_close(trace.hidden, torch.cat([h[1] for h in hidden]))  # the top's
    torch.testing.assert_close(trace.hidden, trace.output * trace.cell.tanh())

from __future__ import annotations

import base64
import re

import pytest
import torch

from nmt.cli import main
from nmt.inside import inspect_sentence
from nmt.translate import Translator


@pytest.fixture(scope="module")
def inspection(trained_run):
    return inspect_sentence(Translator.load(trained_run), "Der hund sieht eine katze.", beam=3)


def test_attention_rows_sum_to_one_over_real_source_positions(inspection):
    attention = inspection.attention

    assert attention.shape == (len(inspection.out_pieces), len(inspection.src_pieces))
    torch.testing.assert_close(attention.sum(-1), torch.ones(attention.size(0)))
    assert (attention >= 0).all()


def test_recorded_decoder_gates_reproduce_the_translation(trained_run, inspection):
    translator = Translator.load(trained_run)

    again = translator.translate([inspection.sentence], beam=3)[0][0]

    assert again.text == inspection.translation
    trace = inspection.decoder
    assert trace.input.shape == trace.cell.shape == (len(inspection.out_pieces), 128)
    for gate in (trace.input, trace.forget, trace.output):
        assert ((gate > 0) & (gate < 1)).all()
    assert inspection.encoder["forward"].cell.shape[0] == len(inspection.src_pieces)


def test_inspect_writes_a_page_with_the_pictures_embedded(trained_run, tmp_path):
    page = tmp_path / "inside.html"

    main(["-q", "inspect", str(trained_run), "Ein mann sieht den ball.", "-o", str(page)])

    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page.read_text())
    assert len(images) == 3
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_inspecting_leaves_the_translators_own_cell_in_place(trained_run, precision):
    translator = Translator.load(trained_run, precision=precision)
    lines = ["Der hund sieht eine katze.", "Ein mann läuft."]
    before = translator.translate(lines, beam=3)

    inspect_sentence(translator, lines[0], beam=3)

    after = translator.translate(lines, beam=3)
    assert [h[0].score for h in after] == [h[0].score for h in before]  # bit for bit

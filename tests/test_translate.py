from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nmt import checkpoint
from nmt.cli import build_parser, main
from nmt.ensemble import Ensemble
from nmt.tokenizer import UNK
from nmt.translate import Hypothesis, Translator
from tests.conftest import make_pairs

LINES = [
    "Der hund läuft.",
    "",
    "   ",
    "Ein mann " + "sieht " * 300,  # longer than data.max_len pieces
    "Eine katze spielt mit einem roten ball im park.",
    "犬が走る。",
    "Ein kind.",
]


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def translator(run):
    return Translator.load(run, precision="fp32")


def test_one_output_per_input_line_in_order(translator):
    hyps = translator.translate(LINES, beam=3)

    assert len(hyps) == len(LINES)
    assert hyps[1][0].text == hyps[2][0].text == ""
    assert all(h[0].text for i, h in enumerate(hyps) if i not in (1, 2))


def test_a_sentence_alone_equals_the_same_sentence_in_a_batch(translator):
    sources = [s for s, _ in make_pairs(12, seed=5)]

    together = translator.translate(sources, beam=3)
    alone = [translator.translate([s], beam=3)[0] for s in sources]

    assert [h[0].text for h in together] == [h[0].text for h in alone]
    for a, b in zip(together, alone, strict=True):
        assert a[0].score == pytest.approx(b[0].score, abs=1e-4)


def test_reported_scores_are_the_models_own_forced_scores(translator):
    sources = [s for s, _ in make_pairs(10, seed=6)]

    hyps = [h[0] for h in translator.translate(sources, beam=4, alpha=0.6)]
    forced = translator.score(sources, [h.text for h in hyps])

    # forced decoding re-tokenizes the text: compare where that gives the same pieces
    same = [
        i for i, h in enumerate(hyps) if translator.tgt_tok.encode([h.text])[0] == list(h.tokens)
    ]
    assert len(same) >= 5
    for i in same:
        assert hyps[i].logprob == pytest.approx(forced[i], abs=1e-3)


def test_nbest_lists_are_sorted_by_score(translator):
    nbest = translator.translate(["Der mann sieht ein kind.", "Ein ball."], beam=5, nbest=5)

    for hyps in nbest:
        assert len(hyps) == 5
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


@pytest.fixture(scope="module")
def two_checkpoints(run, tmp_path_factory) -> tuple:
    """The trained checkpoint and another model of the same shape: its weights moved."""
    folder = tmp_path_factory.mktemp("two")
    cfg, model, tokenizers, _ = checkpoint.load(run / "best.pt")
    torch.manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    checkpoint.save(folder / "moved.pt", cfg=cfg, model=model, tokenizers=tokenizers)
    return run / "best.pt", folder / "moved.pt"


def test_an_ensemble_of_one_checkpoint_equals_that_checkpoint(translator):
    sources = [s for s, _ in make_pairs(8, seed=7)]
    tokenizers = (translator.src_tok, translator.tgt_tok)
    single = translator.translate(sources, beam=3)
    of_one = Translator(Ensemble([translator.model]), tokenizers, translator.cfg).translate(
        sources, beam=3
    )

    assert [h[0].text for h in of_one] == [h[0].text for h in single]
    assert [h[0].score for h in of_one] == pytest.approx([h[0].score for h in single], abs=1e-5)


def test_an_ensemble_scores_the_mean_of_its_members_log_probabilities(two_checkpoints):
    sources = [s for s, _ in make_pairs(12, seed=8)]
    ensemble = Translator.load(list(two_checkpoints), precision="fp32")
    members = [Translator.load(path, precision="fp32") for path in two_checkpoints]

    hyps = [h[0] for h in ensemble.translate(sources, beam=3)]
    texts = [h.text for h in hyps]
    alone = [m.score(sources, texts) for m in members]

    assert alone[0] != pytest.approx(alone[1], abs=0.1)  # two different models
    same = [i for i, h in enumerate(hyps) if ensemble.tgt_tok.encode([h.text])[0] == list(h.tokens)]
    assert len(same) >= 6
    for i in same:  # forced decoding re-tokenizes the text: where that gives the same pieces
        assert hyps[i].logprob == pytest.approx((alone[0][i] + alone[1][i]) / 2, abs=1e-3)


def test_the_average_of_two_checkpoints_is_the_mean_of_their_parameters(two_checkpoints, tmp_path):
    checkpoint.average(list(two_checkpoints), tmp_path / "avg.pt")

    _, averaged, _, state = checkpoint.load(tmp_path / "avg.pt")
    (_, a, _, _), (_, b, _, _) = (checkpoint.load(path) for path in two_checkpoints)
    a, b = a.state_dict(), b.state_dict()
    assert any(not torch.equal(a[name], b[name]) for name in a)
    for name, tensor in averaged.state_dict().items():
        torch.testing.assert_close(tensor, (a[name] + b[name]) / 2, msg=name)
    assert averaged.generator.weight is averaged.tgt_embed.weight  # still tied
    assert state == {}


def test_a_checkpoint_from_before_the_decoder_option_is_the_stacked_decoder(run, tmp_path):
    old = torch.load(run / "best.pt", weights_only=True)
    del old["config"]["model"]["decoder"]  # what a checkpoint saved before it holds
    torch.save(old, tmp_path / "old.pt")
    lines = [s for s, _ in make_pairs(8, seed=4)]

    cfg, _, _, _ = checkpoint.load(tmp_path / "old.pt")
    translations = Translator.load(tmp_path / "old.pt", precision="fp32").translate(lines, beam=3)
    checkpoint.average([tmp_path / "old.pt", run / "best.pt"], tmp_path / "avg.pt")

    assert cfg.model.decoder == "stacked"
    own = Translator.load(run, precision="fp32").translate(lines, beam=3)
    assert [h[0].text for h in translations] == [h[0].text for h in own]
    _, averaged, _, _ = checkpoint.load(tmp_path / "avg.pt")  # the same model: averaged
    assert averaged.cfg.decoder == "stacked"


def nmt(*args, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nmt", "-q", *args], input=stdin, capture_output=True
    )


def test_cli_pipes_stdin_to_stdout_with_one_line_per_input_line(run):
    text = "\n".join(LINES) + "\n"

    result = nmt(
        "translate", str(run), "--beam", "2", "--scores", "--alignments", stdin=text.encode()
    )

    assert result.returncode == 0, result.stderr
    rows = result.stdout.decode().split("\n")[:-1]
    assert len(rows) == len(LINES)
    assert all(len(row.split("\t")) == 3 for row in rows)
    first_alignment = rows[0].split("\t")[2].split()
    assert first_alignment and all("-" in pair for pair in first_alignment)


def test_cli_nbest_rows(run):
    result = nmt("translate", str(run), "--nbest", "3", stdin=b"Der hund.\n\nEin ball.\n")

    rows = [row.split(" ||| ") for row in result.stdout.decode().splitlines()]
    assert [int(r[0]) for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(len(r) == 3 for r in rows)


def test_cli_invalid_utf8_names_the_line_or_is_replaced(run, tmp_path):
    source = tmp_path / "bad.de"
    source.write_bytes(b"Der hund.\nEin \xff ball.\n")

    strict = nmt("translate", str(run), "-i", str(source))
    replaced = nmt("translate", str(run), "-i", str(source), "--errors", "replace")

    assert strict.returncode == 2
    assert strict.stderr.decode().strip() == f"nmt: error: {source} line 2: not valid UTF-8"
    assert replaced.returncode == 0
    assert len(replaced.stdout.decode().splitlines()) == 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_a_cpu_without_its_kernels_is_a_one_line_error(
    run, precision, tmp_path, capsys, monkeypatch
):
    """Not a translation several times slower than fp32: oneDNN would fall back to
    scalar loops."""
    monkeypatch.setattr("nmt.plan.cpu_runs", lambda precision: precision == "fp32")
    source = tmp_path / "in.de"
    source.write_text("Ein kind.\n", encoding="utf-8")

    with pytest.raises(SystemExit) as exit_:
        main(["translate", str(run), "-i", str(source), "--precision", precision])

    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"nmt: error: precision {precision} needs a CPU with AVX-512" in error


@pytest.mark.parametrize("units", [False, True])
def test_translation_with_no_precision_runs_in_bf16_only_on_a_cpu_with_bf16_units(
    run, units, monkeypatch
):
    """`auto`, as training's: the translate, evaluate, inspect and serve commands default
    to it, and Translator.load too."""
    monkeypatch.setattr("nmt.plan.cpu_has_bf16_units", lambda: units)
    monkeypatch.setattr("nmt.plan.cpu_runs", lambda precision: True)  # as on such a CPU
    parser = build_parser()

    translator = Translator.load(run)
    defaults = {
        command: parser.parse_args([command, "R", *extra]).precision
        for command, extra in (("translate", []), ("serve", []), ("inspect", ["S"]))
    }

    assert translator.plan.precision == ("bf16" if units else "fp32")
    assert translator.translate(["Ein hund."])[0][0].text
    assert set(defaults.values()) == {"auto"}


def test_cli_missing_model_is_a_one_line_error(tmp_path):
    result = nmt("translate", str(tmp_path / "nothing"), stdin=b"x\n")

    assert result.returncode == 2
    assert result.stderr.decode().strip().startswith("nmt: error: checkpoint ")


def test_unknown_outputs_take_the_source_piece_they_attend_to(translator):
    line = "Der hund Zürich."
    source = translator.src_tok.pieces(line)
    where = next(i for i, piece in enumerate(source) if "Z" in piece)
    ids = translator.tgt_tok.encode(["the dog"])[0]
    hyp = Hypothesis("the dog", 0.0, 0.0, (*ids, UNK), (*[0] * len(ids), where))

    replaced = translator._replace_unk(line, hyp)

    assert replaced.text.startswith("the dog")
    assert source[where].replace("\u2581", "") in replaced.text


def test_replace_unk_puts_source_pieces_where_the_model_writes_unknowns(run, tmp_path):
    cfg, model, tokenizers, _ = checkpoint.load(run / "best.pt")
    with torch.no_grad():  # a model that writes <unk> at every step
        model.generator.bias[UNK] += 1e4
    unknowing = tmp_path / "unk.pt"
    checkpoint.save(unknowing, cfg=cfg, model=model, tokenizers=tokenizers)
    line = b"Der hund sieht eine katze.\n"

    plain = nmt("translate", str(unknowing), stdin=line).stdout.decode()
    replaced = nmt("translate", str(unknowing), "decode.replace_unk=true", stdin=line)

    assert plain == "\n"  # detokenizing drops <unk>
    text = replaced.stdout.decode()
    assert replaced.returncode == 0 and text.strip()
    source = "".join(tokenizers[0].pieces(line.decode().strip())).replace("\u2581", "")
    assert set(text.replace(" ", "").strip()) <= set(source)

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys

import pytest

from nmt.reporting.evaluation import evaluate
from tests.conftest import make_pairs

REFS = [t for _, t in make_pairs(150, seed=11)]
SRC = [s for s, _ in make_pairs(150, seed=11)]


def degrade(lines: list[str], rate: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(w for w in line.split() if rng.random() > rate) for line in lines]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for name, lines in [
        ("ref", REFS),
        ("src", SRC),
        ("good", degrade(REFS, 0.1, 1)),
        ("bad", degrade(REFS, 0.5, 2)),
    ]:
        (root / name).write_text("".join(line + "\n" for line in lines))
    return root


def test_scores_and_signatures_equal_the_sacrebleu_command_line(files):
    ours = run(
        "nmt",
        "evaluate",
        "--hyp",
        str(files / "good"),
        "--ref",
        str(files / "ref"),
        "--format",
        "json",
    )
    theirs = run(
        "sacrebleu",
        str(files / "ref"),
        "-i",
        str(files / "good"),
        "-m",
        "bleu",
        "chrf",
        "ter",
        "-f",
        "json",
    )

    assert ours.returncode == 0, ours.stderr
    report = json.loads(ours.stdout)
    expected = {row["name"]: row for row in json.loads(theirs.stdout)}
    assert set(expected) == set(report["systems"][0]["scores"])
    for name, row in expected.items():
        assert f"{report['systems'][0]['scores'][name]:.1f}" == f"{row['score']:.1f}"
        assert report["signatures"][name] == row["signature"]
    assert report["bleu"] == report["systems"][0]["scores"]["BLEU"]


def test_a_system_against_itself_is_not_significant_and_a_worse_one_is():
    good, bad = degrade(REFS, 0.1, 1), degrade(REFS, 0.5, 2)

    same = evaluate([("a", good), ("b", good)], [REFS], metrics=("bleu", "chrf"), samples=300)
    worse = evaluate([("a", good), ("b", bad)], [REFS], metrics=("bleu", "chrf"), samples=300)

    assert same.systems[1].p_values["BLEU"] > 0.9
    assert worse.systems[1].p_values["BLEU"] < 0.05
    assert worse.systems[1].scores["BLEU"] < worse.systems[0].scores["BLEU"]
    assert worse.drops and worse.drops[0]["drop"] > 0


def test_line_count_mismatch_names_both_files_and_counts(files, tmp_path):
    short = tmp_path / "short"
    short.write_text("one line\n")

    result = run("nmt", "evaluate", "--hyp", str(short), "--ref", str(files / "ref"))

    assert result.returncode == 2
    assert result.stderr.strip() == f"nmt: error: {short} has 1 lines but {files / 'ref'} has 150"


def test_two_systems_with_the_same_file_name_are_told_apart(files, tmp_path, capsys):
    from nmt.cli import main

    paths = []
    for run_dir, source in (("a", "good"), ("b", "bad")):
        (tmp_path / run_dir).mkdir()
        paths.append(tmp_path / run_dir / "test.en")
        shutil.copy(files / source, paths[-1])

    args = ["evaluate", "--hyp", str(paths[0]), "--hyp", str(paths[1]), "--ref", str(files / "ref")]
    main([*args, "--metrics", "bleu", "--samples", "100", "--format", "json"])

    systems = json.loads(capsys.readouterr().out)["systems"]
    assert [s["name"] for s in systems] == [str(p) for p in paths]
    assert systems[0]["scores"]["BLEU"] > systems[1]["scores"]["BLEU"]


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_missing_or_empty_files_are_named(files, tmp_path, problem):
    path = tmp_path / "hyp"
    if problem == "empty":
        path.write_text("")

    result = run("nmt", "evaluate", "--hyp", str(path), "--ref", str(files / "ref"))

    assert result.returncode == 2
    expected = "does not exist" if problem == "missing" else "is empty: nothing to score"
    assert result.stderr.strip() == f"nmt: error: hypothesis {path} {expected}"


def test_html_report_embeds_its_plots(files, tmp_path):
    page = tmp_path / "report.html"

    result = run(
        "nmt",
        "evaluate",
        "--hyp",
        str(files / "good"),
        "--hyp",
        str(files / "bad"),
        "--ref",
        str(files / "ref"),
        "--src",
        str(files / "src"),
        "--metrics",
        "bleu",
        "--samples",
        "100",
        "--format",
        "html",
        "-o",
        str(page),
    )

    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert (
        len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]+">', text)) == 2
    )
    assert "p = " in text and "nrefs:1" in text


def test_model_option_translates_then_scores_and_keeps_the_hypotheses(trained_run, tmp_path):
    src, ref = tmp_path / "src.de", tmp_path / "ref.en"
    pairs = make_pairs(20, seed=12)
    src.write_text("".join(s + "\n" for s, _ in pairs))
    ref.write_text("".join(t + "\n" for _, t in pairs))
    report = tmp_path / "report.json"

    result = run(
        "nmt",
        "evaluate",
        "--model",
        str(trained_run),
        "--src",
        str(src),
        "--ref",
        str(ref),
        "--metrics",
        "bleu",
        "--format",
        "json",
        "-o",
        str(report),
    )

    assert result.returncode == 0, result.stderr
    hyps = (tmp_path / "report.hyp").read_text().splitlines()
    assert len(hyps) == 20
    assert json.loads(report.read_text())["systems"][0]["name"] == "report.hyp"


def test_model_option_without_a_source_scores_the_runs_own_test_split(
    trained_run, toy_corpus, tmp_path
):
    report = tmp_path / "report.json"
    common = ("--metrics", "bleu", "--format", "json")

    result = run("nmt", "-q", "evaluate", "--model", str(trained_run), *common, "-o", str(report))

    assert result.returncode == 0, result.stderr
    hyps = tmp_path / "val.hyp.en"  # data.test is the toy corpus's val split
    assert len(hyps.read_text().splitlines()) == len(
        (toy_corpus / "val.en").read_text().splitlines()
    )
    again = run("nmt", "evaluate", "--hyp", str(hyps), "--ref", str(toy_corpus / "val.en"), *common)
    bleu = json.loads(report.read_text())["bleu"]
    assert bleu == json.loads(again.stdout)["bleu"] and bleu > 0


def test_two_references_chrf_plus_and_approximate_randomization():
    good, bad = degrade(REFS, 0.1, 1), degrade(REFS, 0.5, 2)
    second_ref = degrade(REFS, 0.05, 3)

    report = evaluate(
        [("a", good), ("b", bad)],
        [REFS, second_ref],
        metrics=("bleu", "chrf"),
        chrf_plus=True,
        test="ar",
        samples=200,
    )

    assert set(report.systems[0].scores) == {"BLEU", "chrF2++"}
    assert "nrefs:2" in report.signatures["BLEU"] and "ar:200" in report.signatures["BLEU"]
    assert report.systems[1].p_values["BLEU"] < 0.05


def test_learning_curves_are_drawn_from_metrics_jsonl(trained_run, tmp_path):
    out = tmp_path / "curves.png"

    result = run("nmt", "plot", str(trained_run), "-o", str(out))

    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"\x89PNG")

"""Terminology as users meet it: the Translator's constraints (a property over generated
lines and constraints), glossaries matched per sentence, `nmt translate --glossary
--avoid --prefix` and JSON Lines, and a real server's /v1/translate and, under
`nmt serve --glossary`, LibreTranslate's /translate."""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt import cli
from nmt.options import Constraints, OptionError
from nmt.text.documents import Line, translate_lines, translate_parts
from nmt.text.glossary import Glossary, GlossaryError
from nmt.text.jsonl import jsonl_lines
from nmt.translate import Translator
from tests.conftest import WORDS
from tests.test_serve import call, free_port, start

ENGLISH = sorted({w for words in WORDS.values() for w in words.split()})
GERMAN = sorted(WORDS)


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.load(trained_run, precision="fp32")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def contains(tokens: tuple[int, ...], phrase: tuple[int, ...], start: int = 0) -> bool:
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(start, len(tokens) - n + 1))


def forms(translator: Translator, phrase: str) -> list[tuple[int, ...]]:
    """The phrase's pieces as given and at the start of a sentence, where the model can
    write them (the toy vocabulary lacks some capitals)."""
    found = (translator._pieces(p) for p in dict.fromkeys([phrase, phrase.capitalize()]))
    return [ids for ids in found if ids]


sentences = st.lists(st.sampled_from(GERMAN), min_size=1, max_size=6).map(
    lambda w: " ".join(w).capitalize() + "."
)
phrases = st.lists(st.sampled_from(ENGLISH), min_size=1, max_size=2).map(" ".join)
constraints = st.builds(
    Constraints,
    include=st.lists(st.lists(phrases, min_size=1, max_size=2).map(tuple), max_size=2).map(tuple),
    avoid=st.lists(phrases, max_size=2).map(tuple),
    prefix=st.one_of(st.just(""), phrases.map(lambda p: p + " ")),
)


lines_with = st.lists(st.tuples(sentences, st.one_of(st.none(), constraints)), max_size=6)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(lines=lines_with.filter(bool), beam=st.integers(1, 3))
def test_every_output_obeys_its_constraints_or_says_what_it_missed(translator, lines, beam):
    texts, given_ = [t for t, _ in lines], [c for _, c in lines]

    found = translator.translate(texts, constraints=given_, beam=beam, nbest=beam)
    plain = translator.translate(texts, beam=beam, nbest=beam)

    for line, hyps, alone in zip(given_, found, plain, strict=True):
        if not line:  # what it gets without any constraint in the call: exactly so, but
            # at a beam of 1 it is batched apart from the constrained lines (greedy search)
            assert [h.text for h in hyps] == [h.text for h in alone]
            scores = [h.score for h in alone]
            assert [h.score for h in hyps] == (scores if beam > 1 else pytest.approx(scores))
            continue
        prefix = translator._pieces(line.prefix) if line.prefix else ()
        for hyp in hyps:
            assert hyp.tokens[: len(prefix)] == prefix
            assert hyp.text.startswith(line.prefix.strip())
            lacking = sum(
                not any(contains(hyp.tokens, f) for p in choice for f in forms(translator, p))
                for choice in line.include
            )
            assert hyp.missed == lacking
            for phrase in line.avoid:
                for form in forms(translator, phrase):
                    assert not contains(hyp.tokens, form, max(0, len(prefix) - len(form) + 1))


def test_required_phrases_are_met_where_the_limit_allows(translator):
    found = translator.translate(
        ["Der hund läuft im park.", "Ein mann sieht die katze."],
        constraints=[Constraints(include=(("blue cat",), ("house",))), None],
        beam=4,
    )

    assert found[0][0].missed == 0 and "blue cat" in found[0][0].text.lower()
    assert "house" in found[0][0].text.lower()


def test_sampling_cannot_honour_constraints(translator):
    with pytest.raises(OptionError, match="beam search"):
        translator.translate(
            ["Der hund."], constraints=[Constraints(prefix="a ")], sample_temperature=1.0
        )


def test_a_phrase_the_model_cannot_write_is_refused_naming_it(translator):
    with pytest.raises(OptionError, match="Ωmega"):
        translator.translate(["Der hund."], constraints=[Constraints(include=(("Ωmega",),))])


def test_a_glossary_file_gathers_choices_and_names_its_bad_lines(tmp_path):
    path = tmp_path / "terms.tsv"
    path.write_text("# comment\nHund\tdog\thound\n\nHund\tcanine\nroter Ball\tred ball\n")

    glossary = Glossary.read(path)

    assert glossary.constraints("Der Hund sieht den roten Ball.") == (("dog", "hound", "canine"),)
    assert glossary.constraints("Ein roter Ball, ein Hund.") == (
        ("red ball",),
        ("dog", "hound", "canine"),
    )
    assert glossary.constraints("Die Hunde.") == ()  # words, no inflection
    path.write_text("Hund\tdog\nKatze\n")
    with pytest.raises(GlossaryError, match="terms.tsv line 2"):
        Glossary.read(path)


def test_the_longer_of_two_overlapping_terms_wins_and_case_may_be_ignored():
    rows = [("1", "Ball", "ball"), ("2", "roter Ball", "red sphere"), ("3", "rot", "crimson")]

    exact, folded = Glossary.of(rows), Glossary.of(rows, ignore_case=True)

    assert exact.constraints("Ein roter Ball und ein Ball.") == (("red sphere",), ("ball",))
    assert exact.constraints("ROTER BALL") == ()
    assert folded.constraints("ROTER BALL, Rot") == (("red sphere",), ("crimson",))


def test_a_glossary_term_binds_the_sentence_that_holds_its_source(translator):
    glossary = Glossary.of([("1", "katze", "ball")])
    line = "Der hund läuft. Die katze springt."

    (parts,) = translate_parts(translator, [line], glossary=glossary, beam=3)

    assert [p.constraints for p, _ in parts] == [None, Constraints(include=(("ball",),))]
    assert "ball" in parts[1][1][0].text and parts[1][1][0].missed == 0


def test_a_line_with_a_prefix_is_one_part_and_begins_with_it(translator):
    line = Line("Der hund läuft. Die katze springt.", Constraints(prefix="a big "))

    (hyps,) = translate_lines(translator, [line], beam=3)

    assert hyps[0].text.startswith("a big ")


def test_json_lines_name_the_line_of_a_bad_record():
    good = '{"text": "Der hund.", "constraints": ["dog", ["cat", "ball"]], "prefix": "the "}'

    lines = list(jsonl_lines([good, ""], "in.jsonl"))

    assert lines[0].constraints == Constraints((("dog",), ("cat", "ball")), (), "the ")
    assert lines[1].text == ""
    deep = '{"text": "x", "avoid": ' + "[" * 100_000 + "]" * 100_000 + "}"
    bad_records = ['{"text": 3}', "[1]", '{"text": "x", "avoid": "dog"}', "{", deep]
    bad_records += ['{"text": "\\ud800"}', '{"text": "a\\nb"}', '{"text": "a\\u2028b"}']
    for bad in bad_records:  # a line break in a text: its translation would be two lines
        with pytest.raises(OptionError, match="in.jsonl line 2"):
            list(jsonl_lines(["", bad], "in.jsonl"))


@given(texts=st.lists(st.text(max_size=8), max_size=5))
def test_a_json_lines_record_is_one_line_or_refused_naming_it(texts):
    """Whatever text a record holds (line breaks of every kind, lone surrogates), its
    translation can be one output line, or the input is refused naming the record."""
    records = [json.dumps({"text": text}) for text in texts]
    try:
        lines = list(jsonl_lines(records, "in.jsonl"))
    except OptionError as err:
        assert re.match(r"in\.jsonl line \d+: ", str(err)), err
    else:
        assert [line.text for line in lines] == texts
        assert all(len(text.splitlines()) <= 1 for text in texts)


def test_translate_takes_a_glossary_words_to_avoid_a_prefix_and_json_lines(
    trained_run, tmp_path, monkeypatch, capsys
):
    (tmp_path / "terms.tsv").write_text("hund\thouse\n")
    (tmp_path / "avoid.txt").write_text("the\n\n")
    (tmp_path / "in.de").write_text("Der hund läuft im park.\nEin mann sieht die katze.\n")
    records = [{"text": "Der hund läuft.", "constraints": ["blue"]}, {"text": "Die katze."}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    common = ["translate", str(trained_run), "--precision", "fp32", "--beam", "4"]

    cli.main([*common, "-i", str(tmp_path / "in.de"), "-o", str(tmp_path / "out.en"),
              "--glossary", str(tmp_path / "terms.tsv"), "--avoid", str(tmp_path / "avoid.txt"),
              "--prefix", "a small "])  # fmt: skip
    cli.main([*common, "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl.en")])

    first, second = (tmp_path / "out.en").read_text().splitlines()
    assert first.startswith("a small ") and "house" in words(first)
    assert second.startswith("a small ") and not {"the", "The"} & set(words(first + second))
    blue, cat = (tmp_path / "out.jsonl.en").read_text().splitlines()
    assert "blue" in words(blue)


@pytest.fixture(scope="module")
def glossary_server(trained_run, tmp_path_factory):
    """A real `nmt serve --glossary` (katze -> house)."""
    path = tmp_path_factory.mktemp("glossary") / "terms.tsv"
    path.write_text("katze\thouse\n")
    process, url = start(trained_run, "--glossary", str(path), "--max-wait-ms", "100")
    yield url
    process.terminate()
    process.wait(timeout=60)


def test_libretranslate_clients_get_the_servers_glossary(glossary_server):
    body = {"q": ["Die katze läuft.", "Der hund läuft."], "source": "de", "target": "en"}

    status, answer, _ = call(glossary_server, "/translate", body)

    assert status == 200 and "house" in words(answer["translatedText"][0])


def test_the_servers_glossary_applies_to_files_too(glossary_server):
    from tests.test_serve_files import get, post

    status, answer = post(glossary_server, ("a.txt", "Die katze läuft.\n".encode()))
    got, data, _ = get(answer["translatedFileUrl"])

    assert status == 200 and got == 200 and "house" in words(data.decode())


def test_the_native_api_takes_a_glossary_constraints_words_to_avoid_and_a_prefix(
    glossary_server, translator
):
    body = {"text": ["Der hund sieht die katze.", "Ein mann."], "source": "de", "target": "en"}
    body |= {"beam": 4, "glossary": [["hund", "ball"]], "avoid": ["the"], "prefix": "a big "}
    body |= {"constraints": [["blue", "red"]]}

    status, answer, _ = call(glossary_server, "/v1/translate", body)

    assert status == 200
    for result in answer["translations"]:
        best = result["nbest"][0]
        assert best["text"].startswith("a big ") and best["missed"] == 0
        assert {"blue", "red"} & set(words(best["text"])) and "the" not in words(best["text"])
    first = words(answer["translations"][0]["nbest"][0]["text"])
    assert {"ball", "house"} <= set(first)  # the request's glossary, and the server's


def test_requests_with_and_without_constraints_share_batches(glossary_server, translator):
    def metric(name: str) -> int:
        text = call(glossary_server, "/metrics")[1]
        return int(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))

    plain = {"source": "de", "target": "en", "beam": 3}
    bodies = [
        {**plain, "text": f"Der hund {'läuft ' * (i % 3)}im park."}
        | ({"constraints": ["blue"]} if i % 2 else {})
        for i in range(16)
    ]
    before = metric("nmt_batches_total")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: call(glossary_server, "/v1/translate", b)[1], bodies))

    assert metric("nmt_batches_total") - before < 16 / 2
    for body, answer in zip(bodies, answers, strict=True):
        text = answer["translations"][0]["nbest"][0]["text"]
        if "constraints" in body:
            assert "blue" in words(text)
        else:  # the server's glossary binds katze only: this is the plain translation
            assert text == translate_lines(translator, [body["text"]], beam=3).__next__()[0].text


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"glossary": [["hund"]]}, "glossary"),
        ({"glossary": [["hund", "Ωmega"]]}, "Ωmega"),
        ({"constraints": "dog"}, "constraints"),
        ({"avoid": ["\n"]}, "empty"),
        ({"prefix": 3}, "prefix"),
        ({"constraints": ["dog"], "sample_temperature": 1.0}, "beam search"),
    ],
)
def test_bad_constraints_are_400_naming_them(glossary_server, extra, named):
    body = {"text": "Der hund.", "source": "de", "target": "en", **extra}

    status, answer, _ = call(glossary_server, "/v1/translate", body)

    assert status == 400 and named in answer["error"], answer


def test_a_glossary_the_model_cannot_write_stops_the_server_at_start(trained_run, tmp_path):
    import subprocess

    (tmp_path / "terms.tsv").write_text("hund\tΩmega\n")
    port = str(free_port())
    command = [sys.executable, "-m", "nmt", "serve", str(trained_run), "--port", port,
               "--glossary", str(tmp_path / "terms.tsv")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 2 and "Ωmega" in done.stderr

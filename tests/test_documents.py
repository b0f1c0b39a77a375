"""Whole lines: every sentence of a line and every word of a long one translated, what
has nothing to translate passed through, one output line per input line."""

from __future__ import annotations

import itertools
import logging
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.decoding import Hypothesis
from nmt.text import documents, placement
from nmt.text.documents import Part, Summary, translate_lines
from nmt.text.markup import INLINE, UNTRANSLATED, translate_html
from nmt.translate import Translator
from tests.conftest import WORDS, make_pairs


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.load(trained_run, precision="fp32")


def texts(hyps) -> list[str]:
    return [nbest[0].text for nbest in hyps]


def test_a_line_of_ten_sentences_comes_back_as_its_ten_translations(translator):
    sentences = [src for src, _ in make_pairs(10, seed=5)]
    alone = texts(translator.translate(sentences))
    summary = Summary()
    (line,) = texts(translate_lines(translator, ["  ".join(sentences)], summary=summary))
    assert line == "  ".join(alone)  # the same translations, in order, the source's spacing
    assert (summary.sentences, summary.split) == (10, 1)
    unsplit = texts(translate_lines(translator, ["  ".join(sentences)], split=False))
    assert len(unsplit[0].split()) < len(line.split())  # what splitting is for


def test_a_sentence_over_the_limit_is_translated_whole_in_windows(translator):
    words = [w for src, _ in make_pairs(40, seed=6) for w in src.rstrip(".").lower().split()]
    sentence = " ".join(words)  # no punctuation to split at
    limit = translator.cfg.data.max_len
    assert len(translator.src_tok.pieces(sentence)) > 2 * limit
    windows = [sentence[a:b] for a, b in documents._windows(translator, sentence)]
    assert " ".join(windows) == sentence  # every word in one window
    assert all(len(translator.src_tok.pieces(w)) <= limit for w in windows)
    summary = Summary()
    (line,) = texts(translate_lines(translator, [sentence], summary=summary))
    assert line == " ".join(texts(translator.translate(windows)))
    assert (summary.cut, summary.windows) == (1, len(windows)) and len(windows) >= 3


def test_what_has_nothing_to_translate_passes_through_unchanged(translator):
    lines = ["😀 🎉 !!!", "12 345,6", "https://example.com/a?b=1", "\x00\x00", "", "   "]
    unknown = ["Η γρήγορη αλεπού.", "日本語のテキスト"]  # scripts the toy model never saw
    summary = Summary()
    out = texts(translate_lines(translator, [*lines, *unknown, "Der hund läuft."], summary=summary))
    assert out[:-1] == [*lines, *unknown]
    assert out[-1] and out[-1] != "Der hund läuft."
    assert (summary.no_letters, summary.unknown_script) == (4, 2)
    assert "2 parts in a script the model does not know passed through" in str(summary)


def test_one_sentence_lines_translate_the_same_split_or_not(translator, toy_corpus):
    lines = (toy_corpus / "val.de").read_text(encoding="utf-8").splitlines()
    split = texts(translate_lines(translator, lines))
    assert split == texts(translate_lines(translator, lines, split=False))
    assert split == texts(translator.translate(lines))


def test_scores_and_alignments_of_the_parts_add_up(translator):
    first, second = "Der hund läuft.", "Ein mann sieht die katze."
    parts = translator.translate([first, second], beam=3, nbest=2)
    joined = next(translate_lines(translator, [f"{first} {second}"], beam=3, nbest=2))
    for k, hyp in enumerate(joined):
        a, b = parts[0][k], parts[1][k]
        assert hyp.text == f"{a.text} {b.text}"
        assert hyp.score == pytest.approx(a.score + b.score)
        assert hyp.logprob == pytest.approx(a.logprob + b.logprob)
        assert hyp.tokens == a.tokens + b.tokens
        offset = len(translator.src_tok.encode([first])[0])
        assert hyp.alignment == a.alignment + tuple(i + offset for i in b.alignment)


ODD = ["Hund\0", "\ufb01", "\u00e4", "a\u0308", "😀", "\u200b", "Ωμέγα", "\t", " ", "x" * 40, "."]


@settings(max_examples=30, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.sampled_from(ODD) | st.text(max_size=4), st.integers(1, 300)),
        min_size=1,
        max_size=4,
    )
)
def test_no_window_is_over_the_limit_and_together_they_are_the_text(translator, parts):
    """Whatever the text (repeats of what encodes to more pieces alone than inside the
    line: 'Hund\\0'*200, 'ﬁ'*300), each window encodes alone to at most the model's
    limit, and the windows with the source's own gaps between them are the text."""
    text = "".join(piece * times for piece, times in parts).strip()
    if not text:
        return
    limit = translator.cfg.data.max_len

    spans = documents._windows(translator, text)

    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start and not text[end:start].strip()  # only the source's whitespace
    for start, end in spans:
        window = text[start:end]
        assert window == window.strip() and window
        assert len(translator.src_tok.encode([window])[0]) <= limit, (window[:40], limit)
    parts_ = documents._parts(translator, 0, documents.Line(text), split=False)
    assert "".join(p.lead + p.text + p.trail for p in parts_) == text


def test_the_issues_strings_are_translated_whole_not_truncated(translator, caplog):
    """'Hund\\0'*200 and 'ﬁ'*300 re-encoded to 101 pieces in a window of 100, and the
    model read only their first 100 (a warning said so)."""
    for text in ["Hund\0" * 200, "\ufb01" * 300]:
        summary = Summary()
        with caplog.at_level(logging.WARNING):
            (line,) = texts(translate_lines(translator, [text], summary=summary))
        assert summary.cut == 1 and summary.windows > 1
        assert not [r for r in caplog.records if "exceed" in r.getMessage()]


TEXT = st.lists(
    st.one_of(
        st.sampled_from(sorted(WORDS)),
        st.sampled_from([".", "!", "?", "...", "z. B.", "Dr.", "😀", "Ωμέγα", "漢字", "\t", "  "]),
        st.text(max_size=3),
    ),
    max_size=30,
).map(" ".join)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(TEXT, min_size=1, max_size=6))
def test_any_text_keeps_its_lines_and_what_has_no_letters(translator, lines):
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    out = texts(translate_lines(translator, lines, beam=2))
    assert len(out) == len(lines)
    for line, text in zip(lines, out, strict=True):
        if not any(c.isalpha() for c in line):
            assert text == line


PAGE = """<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Der hund</title>
<style>p { color: red; } /* </p> der hund */</style>
<script>if (a < b && c) { document.write("</div> der hund"); }</script></head>
<body class="x" data-a='1'><!-- der hund --><h1 id=top>Der hund &amp; die katze</h1>
<p>Ein mann <b>läuft</b> im <a href="/park?x=1&amp;y=2" title="Park">park</a>.&nbsp;Ein kind
spielt.</p><pre>  Der hund läuft.
    Die katze springt.</pre><br/><IMG SRC="a.png" alt="Bild"><P>&copy; 2024</P></body></html>
"""


class Tree(HTMLParser):
    """A page's tags (with attributes), comments and raw-text contents in order: its
    structure; and the text of each block (between block-level tags), inline tags left
    out."""

    def __init__(self, page: str):
        super().__init__()
        self.structure, self.blocks, self.raw = [], [""], None
        self.feed(page)
        self.close()

    def _tag(self, item: tuple) -> None:
        self.structure.append(item)
        if item[1] not in INLINE:
            self.blocks.append("")

    def handle_starttag(self, tag, attrs):
        self._tag(("start", tag, attrs))
        self.raw = tag if tag in UNTRANSLATED else None

    def handle_endtag(self, tag):
        self._tag(("end", tag))
        self.raw = None

    def handle_startendtag(self, tag, attrs):
        self._tag(("void", tag, attrs))

    def handle_comment(self, data):
        self.structure.append(("comment", data))

    def handle_data(self, data):
        if self.raw:
            self.structure.append(("raw", data))
        else:
            self.blocks[-1] += data


def test_html_keeps_its_markup_and_translates_every_text(translator):
    out = translate_html(translator, PAGE)
    before, after = Tree(PAGE), Tree(out)
    assert after.structure == before.structure  # tags, attributes, comments, script, style
    assert len(after.blocks) == len(before.blocks)
    for source, target in zip(before.blocks, after.blocks, strict=True):
        if any(c.isalpha() for c in source):
            assert target != source, source  # translated
        else:
            assert target == source  # whitespace, "© 2024"
    assert "&copy; 2024" in out and "&amp;" in out  # entities of untranslated text kept
    pre = out.split("<pre>")[1].split("</pre>")[0].split("\n")
    assert [line[: len(line) - len(line.lstrip())] for line in pre] == ["  ", "    "]


def test_inline_tags_lose_no_word_of_the_translation(translator):
    page = "<p>Ein mann <b>sieht</b> die <i>katze</i> im park.</p>"
    (plain,) = texts(translate_lines(translator, ["Ein mann sieht die katze im park."]))
    out = translate_html(translator, page)
    assert Tree(out).blocks[1] == plain and Tree(out).structure == Tree(page).structure


def pieces_by_word(pieces: list[str]) -> list[int]:
    """Each piece's word number (a word starts at a piece with the word mark)."""
    words = list(itertools.accumulate(p.startswith("\u2581") for p in pieces))
    return [w - 1 for w in words]


def test_inline_tags_go_around_the_words_aligned_to_theirs(translator, monkeypatch):
    source = "Ein mann sieht die katze im park."
    target = "a man sees the cat in the park ."  # word k aligned to source word ALIGNED[k]
    aligned = [0, 1, 2, 3, 4, 5, 5, 6, 6]
    src_words = pieces_by_word(translator.src_tok.pieces(source))
    ids = translator.tgt_tok.encode([target])[0]
    tgt_words = pieces_by_word(translator.tgt_tok.id_to_piece(ids))
    alignment = tuple(src_words.index(aligned[w]) for w in tgt_words)
    hyp = Hypothesis(target, -1.0, -1.0, tuple(ids), alignment)

    def translate_parts(translator, lines, **options):
        for line in lines:
            yield [(Part(0, 0, 0, "", line, "", copy=False), [hyp])] if line else []

    monkeypatch.setattr(placement, "translate_parts", translate_parts)
    out = translate_html(translator, "<p>Ein mann <b>sieht</b> die <i>katze</i> im park.</p>")
    assert out == "<p>a man <b>sees</b> the <i>cat</i> in the park .</p>"


TAGS = st.sampled_from(["b", "i", "a", "span", "p", "div", "script", "style", "pre"])


@st.composite
def pages(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        tag, text = draw(TAGS), draw(TEXT).replace("<", "&lt;")
        parts.append(f'<{tag} class="c">{text}</{tag}>' if draw(st.booleans()) else text)
    return "".join(parts) + draw(st.sampled_from(["", "<br>", "<!-- x -->", "&amp;"]))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(page=pages())
def test_any_html_keeps_every_tag(translator, page):
    assert Tree(translate_html(translator, page, beam=2)).structure == Tree(page).structure

"""Inline formatting placed by the alignments (nmt/text/placement.py), for every format:
exactly where a known alignment says, every Text given back by a translation that
changes nothing, and no character of any translation lost, whatever the alignment."""

from __future__ import annotations

import io
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.text.documents import translate_lines
from nmt.text.formats import translate_file
from nmt.text.placement import Mark, Text, translate_units
from tests.documents_made import docx_file
from tests.stand_in import StandIn, identity

PARK = [[("Ein Mann ", ""), ("sieht", "b"), (" die ", ""), ("Katze", "i"), (" im Park.", "")]]


def test_word_runs_go_around_the_words_a_known_alignment_gives():
    import docx

    target = "A man is looking at the cat in the park."
    # target word j -> source word: Ein Mann sieht die Katze im Park.
    aligned = [0, 1, 2, 2, 3, 3, 4, 5, 5, 6]
    translator = StandIn(lambda s: target, align=lambda j, n: aligned[j])

    out = translate_file(translator, docx_file(PARK), "docx", "park.docx")

    runs = docx.Document(io.BytesIO(out)).paragraphs[0].runs
    assert [(r.text, bool(r.bold), bool(r.italic)) for r in runs[:5]] == [
        ("A man ", False, False),
        ("is looking", True, False),
        (" at the ", False, False),
        ("cat", False, True),
        (" in the park.", False, False),
    ]


WORDS = st.sampled_from(["Ein", "Mann", "sieht", "Katze.", "groß", "12", "Straße", "ä", "x"])
TEXTS = st.lists(st.one_of(WORDS, st.sampled_from([" ", "  ", "\n", "", "!", "a-b"])), max_size=6)
ITEMS = st.one_of(
    TEXTS.map(lambda parts: Text("".join(parts))),
    st.builds(Mark, st.booleans(), st.sampled_from(["", "", " ", "\t", "\n"])),
)


@settings(max_examples=150, deadline=None)
@given(unit=st.lists(ITEMS, max_size=10))
def test_a_translation_that_changes_nothing_gives_every_text_back(unit):
    (texts,) = translate_units(identity(), [unit])

    if texts is not None:
        assert texts == [item.text for item in unit if isinstance(item, Text)]


@settings(max_examples=150, deadline=None)
@given(unit=st.lists(ITEMS, max_size=10), seed=st.integers(0, 2**16))
def test_no_character_of_any_translation_is_lost(unit, seed):
    def shuffled(sentence: str) -> str:  # the same sentence, the same "translation"
        words = sentence.split()
        random.Random(seed + sum(map(ord, sentence))).shuffle(words)
        return " ".join([*words, "neu"])

    translator = StandIn(shuffled, align=lambda j, n: random.Random(seed * 31 + j).randrange(n))
    plain = "".join(item.text for item in unit)

    (texts,) = translate_units(translator, [unit])

    whole = [hyps[0].text for hyps in translate_lines(translator, plain.split("\n"))]
    if texts is not None:  # every character but spaces, in order
        assert re.sub(r"\s", "", "".join(texts)) == re.sub(r"\s", "", "".join(whole))

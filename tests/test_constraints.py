"""Constrained beam search against the exhaustive oracle of tests/test_search.py: a wide
beam finds the best output that contains every required phrase, no forbidden one and
begins with the prefix; sentences without constraints decode exactly as without them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.constraints import ATTACHES, CONTINUES, STARTS, Targets, pack
from tests.test_search import EOS, exhaustive, random_table, search

WORDS = (3, 4, 5)  # the scripted tables' words: vocabulary 6 with PAD, BOS, EOS
GLUED = torch.tensor([STARTS] * 5 + [CONTINUES], dtype=torch.int8)  # 5 continues, as "ing"


def constrained(table, targets, max_len, src=None, shrink_step=1, glued=None, **options):
    """beam_search on the scripted model, one sentence per target; -> Hypotheses.
    `glued`: each word's code (none continues a word by default)."""
    src = src or [[5]] * len(targets)
    phrases = pack(targets, torch.device("cpu"), glued)
    return search(table, src, max_len, phrases=phrases, shrink_step=shrink_step, **options)


def contains(seq: list[int], phrase, start: int = 0) -> bool:
    """Whether `phrase` occurs in seq ending at position >= start + len(phrase) - 1."""
    n = len(phrase)
    return any(seq[i : i + n] == list(phrase) for i in range(max(0, start - n + 1), len(seq)))


def occurs_whole(seq: list[int], phrase, glued=()) -> bool:
    """Whether `phrase` occurs in seq where no glued piece follows it."""
    n = len(phrase)
    ends = (i + n for i in range(len(seq) - n + 1) if seq[i : i + n] == list(phrase))
    return any(end == len(seq) or seq[end] not in glued for end in ends)


def goes_on(seq: list[int], phrase: list[int], word: int) -> bool:
    """Whether `word` is the phrase's next piece after the most of it that seq ends with."""
    done = max(n for n in range(len(phrase) + 1) if n == 0 or seq[-n:] == phrase[:n])
    return done < len(phrase) and phrase[done] == word


def obeys(target: Targets, seq: list[int], *, met: bool, glued=()) -> bool:
    """The oracle's rules: the prefix first, no forbidden phrase ending after it (the
    prefix is the user's own text), no `glued` word right after a whole required
    phrase (after the prefix) unless it goes on with another one, nor after a prefix
    that ends a word, and every required phrase (in one of its forms, no glued piece
    after it) where `met`, not all of them where not."""
    body, start = seq[:-1], len(target.prefix)  # without EOS
    if body[:start] != list(target.prefix):
        return False
    if any(contains(body, phrase, start) for phrase in target.avoid):
        return False
    if (
        target.prefix
        and target.prefix_ends_word
        and body[start : start + 1] in ([g] for g in glued)
    ):
        return False
    every = [list(alt) for choice in target.include for alt in choice]
    for i in range(start, len(body)):
        whole = any(body[:i][i - len(a) :] == a for a in every if len(a) <= i)
        if body[i] in glued and whole and not any(goes_on(body[:i], a, body[i]) for a in every):
            return False
    choices = target.include
    all_met = all(any(occurs_whole(body, alt, glued) for alt in c) for c in choices)
    return all_met == met


phrases = st.lists(st.sampled_from(WORDS), min_size=1, max_size=2).map(tuple)
targets = st.builds(
    Targets,
    include=st.lists(st.lists(phrases, min_size=1, max_size=2).map(tuple), max_size=2).map(tuple),
    avoid=st.lists(phrases, max_size=2).map(tuple),
    prefix=st.lists(st.sampled_from(WORDS), max_size=2).map(tuple),
    prefix_ends_word=st.booleans(),
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    target=targets,
    seed=st.integers(0, 10_000),
    max_len=st.integers(2, 5),
    alpha=st.sampled_from([0.0, 0.6, 1.5]),
    glued=st.sampled_from([(), (5,)]),
)
def test_a_wide_beam_finds_the_best_output_that_obeys_every_constraint(
    target, seed, max_len, alpha, glued
):
    table = random_table(steps=5, vocab=6, seed=seed)  # up to 121 outputs: a beam of 128
    mask = torch.tensor([CONTINUES if v in glued else STARTS for v in range(6)], dtype=torch.int8)

    found = constrained(table, [target], [max_len], beam_size=128, alpha=alpha, nbest=3, glued=mask)

    max_len = max(max_len, len(target.prefix) + 1)  # the search makes room for the prefix
    rules = {"glued": glued}
    best = exhaustive(table, max_len, alpha, lambda seq: obeys(target, seq, met=True, **rules))
    missed = [0] * 3 if found.missed is None else found.missed[0].tolist()  # None: no phrases
    if not best:  # no output can meet them: the best of those that obey the rest, flagged
        best = exhaustive(table, max_len, alpha, lambda s: obeys(target, s, met=False, **rules))
        assert missed[0] > 0
    else:
        assert missed[: len(best)] == [0] * min(3, len(best))
    for k, (score, seq) in enumerate(best[:3]):
        assert found.tokens[0, k, 1 : len(seq) + 1].tolist() == seq
        assert found.scores[0, k].item() == pytest.approx(score, abs=1e-4)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    chosen=st.lists(st.one_of(st.none(), targets), min_size=2, max_size=6),
    seed=st.integers(0, 10_000),
    beam=st.integers(1, 4),
    alpha=st.sampled_from([0.0, 1.0]),
    beta=st.sampled_from([0.0, 0.4]),
    shrink=st.sampled_from([1, 4]),
)
def test_sentences_without_constraints_decode_exactly_as_without_any(
    chosen, seed, beam, alpha, beta, shrink
):
    table = random_table(steps=7, vocab=6, seed=seed)
    g = torch.Generator().manual_seed(seed)
    limits = torch.randint(1, 8, (len(chosen),), generator=g).tolist()
    src = torch.randint(3, 6, (len(chosen), 3), generator=g).tolist()
    options = {"beam_size": beam, "alpha": alpha, "beta": beta, "nbest": beam}
    options["shrink_step"] = shrink

    plain = constrained(table, [None] * len(chosen), limits, src, **options)
    mixed = constrained(table, chosen, limits, src, **options)

    L = plain.tokens.size(-1)  # a prefix may lengthen the batch's outputs: padding only
    for i, target in enumerate(chosen):
        if not target:
            assert torch.equal(mixed.tokens[i, :, :L], plain.tokens[i])
            assert torch.equal(mixed.align[i, :, :L], plain.align[i])
            assert (mixed.tokens[i, :, L:] == 0).all() and (mixed.align[i, :, L:] == -1).all()
            assert torch.equal(mixed.scores[i], plain.scores[i])
            assert torch.equal(mixed.logprob[i], plain.logprob[i])


def test_a_phrase_that_overlaps_itself_is_found_where_it_ends():
    # the model wants 3 3 3 4: the phrase 3 3 4 starts at the second 3, which a matcher
    # that restarts after a mismatch would miss (and then force another 3 3 4)
    table = torch.full((6, 6, 6), -20.0)
    for t, (prev, word) in enumerate([(1, 3), (3, 3), (3, 3), (3, 4), (4, EOS)]):
        table[t, prev, word] = -0.01
    table = table.log_softmax(-1)

    found = constrained(table, [Targets(include=(((3, 3, 4),),))], [5], beam_size=2)

    assert found.tokens[0, 0, 1:6].tolist() == [3, 3, 3, 4, EOS]
    assert found.missed[0, 0].item() == 0


def test_a_limit_too_short_for_the_constraints_returns_the_best_complete_output_flagged():
    table = random_table(steps=4, vocab=6, seed=3)

    found = constrained(table, [Targets(include=(((3, 4, 5),),))], [3], beam_size=4)

    assert found.missed[0, 0].item() == 1
    best_score, best_seq = exhaustive(table, 3, 0.0)[0]
    assert found.tokens[0, 0, 1 : len(best_seq) + 1].tolist() == best_seq


@pytest.mark.parametrize("ends_word", [False, True])
def test_after_a_prefix_that_ends_a_word_the_next_piece_starts_one(ends_word):
    # the model wants 3 5 EOS; 5 continues a word: after the prefix "3 " it may not
    table = torch.full((4, 6, 6), -20.0)
    for t, (prev, word) in enumerate([(1, 3), (3, 5), (5, EOS)]):
        table[t, prev, word] = -0.01
    table[1, 3, 4], table[2, 4, EOS] = -3.0, -0.01
    target = Targets(prefix=(3,), prefix_ends_word=ends_word)

    found = constrained(table.log_softmax(-1), [target], [4], beam_size=3, glued=GLUED)

    assert found.tokens[0, 0, 1:4].tolist() == ([3, 4, EOS] if ends_word else [3, 5, EOS])


def test_after_a_prefix_that_ends_in_a_space_no_piece_attaches():
    # the model wants 3 then 5, a piece that attaches without continuing the word (as
    # "-" or ","); after the typed "3 " the text must go on with a word (4), and after a
    # whole required phrase it may attach
    table = torch.full((4, 6, 6), -20.0)
    table[0, 1, 3], table[1, 3, 5], table[2, 5, EOS] = -0.01, -0.01, -0.01
    table[1, 3, 4], table[2, 4, EOS] = -3.0, -0.01
    attaching = torch.tensor([STARTS] * 5 + [ATTACHES], dtype=torch.int8)
    typed = Targets(prefix=(3,), prefix_ends_word=True)
    required = Targets(include=(((3,),),))

    found = constrained(table.log_softmax(-1), [typed, required], [4, 4], beam_size=3,
                        glued=attaching)  # fmt: skip

    assert found.tokens[0, 0, 1:4].tolist() == [3, 4, EOS]
    assert found.tokens[1, 0, 1:4].tolist() == [3, 5, EOS]

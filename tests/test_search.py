from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import pytest
import torch

from nmt.search import beam_search, greedy, length_penalty

PAD, BOS, EOS = 0, 1, 2


class Rows(NamedTuple):
    x: torch.Tensor

    def select(self, rows):
        return Rows(self.x[rows])


class ScriptedModel:
    """Log-probs from a fixed table indexed by (step, previous token): an oracle for search."""

    def __init__(self, table: torch.Tensor):  # (steps, V, V) log-probs
        self.table = table

    def encode(self, src, src_len):
        return Rows(src), Rows(torch.zeros(src.size(0), dtype=torch.long))

    def decode_step(self, token, state, memory):
        step = state.x
        return self.table[step, token].clone(), Rows(step + 1)


def random_table(steps: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(steps, vocab, vocab, generator=g) * 2
    logits[..., [PAD, BOS]] = -1e9  # never generated: keep the oracle's space the same
    return logits.log_softmax(-1)


def exhaustive_best(table: torch.Tensor, max_len: int, alpha: float) -> tuple[float, list[int]]:
    """Scores every output of up to max_len tokens (the last one EOS)."""
    vocab = table.size(-1)
    words = [v for v in range(vocab) if v not in (PAD, BOS, EOS)]
    best = (-math.inf, [])
    for length in range(1, max_len + 1):
        for body in itertools.product(words, repeat=length - 1):
            seq, prev, score = [*body, EOS], BOS, 0.0
            for t, token in enumerate(seq):
                score += table[t, prev, token].item()
                prev = token
            best = max(best, (score / length_penalty(length, alpha), seq))
    return best


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_exhaustive_best(alpha, seed):
    table, max_len = random_table(steps=4, vocab=6, seed=seed), 4  # 3 words: 40 outputs

    tokens, scores = beam_search(
        ScriptedModel(table),
        torch.tensor([[5]]),
        torch.tensor([1]),
        max_len=torch.tensor([max_len]),
        beam_size=40,
        alpha=alpha,
        bos=BOS,
        eos=EOS,
        pad=PAD,
    )

    best_score, best_seq = exhaustive_best(table, max_len, alpha)
    assert scores[0, 0].item() == pytest.approx(best_score, abs=1e-5)
    assert tokens[0, 0, 1 : len(best_seq) + 1].tolist() == best_seq


def test_beam_of_one_equals_greedy():
    table = random_table(steps=6, vocab=7, seed=3)
    src = torch.tensor([[5], [6], [5]])
    max_len = torch.tensor([6, 3, 5])

    beam_tokens, beam_scores = beam_search(
        ScriptedModel(table),
        src,
        torch.ones(3, dtype=torch.long),
        max_len=max_len,
        beam_size=1,
        bos=BOS,
        eos=EOS,
        pad=PAD,
    )
    greedy_tokens, greedy_scores = greedy(
        ScriptedModel(table),
        src,
        torch.ones(3, dtype=torch.long),
        max_len=max_len,
        bos=BOS,
        eos=EOS,
        pad=PAD,
    )

    width = greedy_tokens.size(1)
    assert beam_tokens[:, 0, :width].tolist() == greedy_tokens.tolist()
    torch.testing.assert_close(beam_scores[:, 0], greedy_scores)


def test_every_hypothesis_respects_its_sentence_limit_and_lists_are_sorted():
    table = random_table(steps=8, vocab=6, seed=4)
    table[:, :, EOS] = -20.0  # the model never wants to stop

    tokens, scores = beam_search(
        ScriptedModel(table),
        torch.tensor([[5], [5]]),
        torch.ones(2, dtype=torch.long),
        max_len=torch.tensor([3, 7]),
        beam_size=4,
        bos=BOS,
        eos=EOS,
        pad=PAD,
    )

    for sentence, limit in enumerate([3, 7]):
        for hyp in tokens[sentence].tolist():
            assert EOS in hyp[1 : limit + 1]
    assert (scores[:, :-1] >= scores[:, 1:]).all()

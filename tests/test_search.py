"""Search against oracles: a scripted model whose log-probabilities are a fixed table."""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import pytest
import torch

from nmt.ensemble import Ensemble
from nmt.kernels.topk import row_argmax, top_k
from nmt.scoring import BeamOptions, length_penalty
from nmt.search import beam_search, greedy, sample

PAD, BOS, EOS = 0, 1, 2
SPECIALS = {"bos": BOS, "eos": EOS, "pad": PAD}


class Rows(NamedTuple):
    x: torch.Tensor

    def select(self, rows):
        return Rows(self.x[rows])


class ScriptedModel:
    """Log-probs come from a table indexed by (step, previous token)."""

    def __init__(self, table: torch.Tensor):  # (steps, V, V) log-probs
        self.table = table

    def encode(self, src, src_len):
        return Rows(src), Rows(torch.zeros(src.size(0), dtype=torch.long))

    def decode_step(self, token, state, memory):
        step = state.x
        attn = torch.nn.functional.one_hot(step % memory.x.size(1), memory.x.size(1)).float()
        return self.table[step, token].clone(), Rows(step + 1), attn


def random_table(steps: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(steps, vocab, vocab, generator=g) * 2
    logits[..., [PAD, BOS]] = -1e9  # never generated: keep the oracle's space the same
    return logits.log_softmax(-1)


def search(table, src, max_len, *, phrases=None, shrink_step=1, **options):
    """beam_search on the scripted model; `options`: BeamOptions'."""
    src = torch.tensor(src)
    return beam_search(
        ScriptedModel(table),
        src,
        torch.full((src.size(0),), src.size(1)),
        max_len=torch.tensor(max_len),
        options=BeamOptions(**options),
        shrink_step=shrink_step,
        phrases=phrases,
        **SPECIALS,
    )


def exhaustive(table, max_len: int, alpha: float, allowed=lambda seq: True):
    """Every output of up to max_len tokens (the last one EOS), best first: (score, seq)."""
    words = [v for v in range(table.size(-1)) if v not in (PAD, BOS, EOS)]
    scored = []
    for length in range(1, max_len + 1):
        for body in itertools.product(words, repeat=length - 1):
            seq = [*body, EOS]
            if not allowed(seq):
                continue
            score = sum(
                table[t, prev, tok].item()
                for t, (prev, tok) in enumerate(zip([BOS, *seq[:-1]], seq, strict=True))
            )
            scored.append((score / length_penalty(length, alpha), seq))
    return sorted(scored, reverse=True)


def exhaustive_best(table, max_len: int, alpha: float, allowed=lambda seq: True):
    return exhaustive(table, max_len, alpha, allowed)[0]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_exhaustive_nbest(alpha, seed):
    table = random_table(steps=4, vocab=6, seed=seed)  # 3 words, up to 4 tokens: 40 outputs

    found = search(table, [[5]], [4], beam_size=40, alpha=alpha, nbest=5)

    best = exhaustive(table, 4, alpha)[:5]
    assert found.scores[0].tolist() == pytest.approx([score for score, _ in best], abs=1e-5)
    for k, (_, seq) in enumerate(best):
        assert found.tokens[0, k, 1 : len(seq) + 1].tolist() == seq


class CountingModel(ScriptedModel):
    def __init__(self, table):
        super().__init__(table)
        self.rows = 0  # decoder rows computed

    def decode_step(self, token, state, memory):
        self.rows += token.numel()
        return super().decode_step(token, state, memory)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_sentence_stops_once_no_live_beam_can_overtake_its_best(alpha):
    # EOS first is far likelier than any other output can become: once it has
    # finished, decoding on could not change the result.
    table = random_table(steps=8, vocab=6, seed=12)
    table[0, BOS] = torch.tensor([-1e9, -1e9, 0.9, 0.05, 0.03, 0.02]).log()
    model = CountingModel(table)

    found = beam_search(
        model,
        torch.tensor([[5]]),
        torch.ones(1, dtype=torch.long),
        max_len=torch.tensor([8]),
        options=BeamOptions(beam_size=4, alpha=alpha),
        **SPECIALS,
    )

    assert found.tokens[0, 0, 1].item() == EOS
    assert model.rows == 1  # step 0 decodes one row (the 4 beams are one), and no more


def test_with_a_length_penalty_a_live_beam_may_still_overtake_a_better_logprob():
    # EOS first has the best log-probability (0.5), but w3 w4 EOS (0.4 * 0.95 * 0.98)
    # wins once alpha = 2 divides by ((5 + 3) / 6) ** 2: stopping when the live beams'
    # log-probability falls below the finished one's would be wrong here.
    table = random_table(steps=3, vocab=6, seed=14)
    table[0, BOS] = torch.tensor([1e-9, 1e-9, 0.5, 0.4, 0.05, 0.05]).log()
    table[1, 3] = torch.tensor([1e-9, 1e-9, 0.01, 0.02, 0.95, 0.02]).log()
    table[2, 4] = torch.tensor([1e-9, 1e-9, 0.98, 0.01, 0.005, 0.005]).log()
    # the other beam (w4 or w5, a tie) must not finish at step 1: K = 2 finished
    # hypotheses would end the search there (fairseq's rule), whatever the bound says
    table[1, 4] = table[1, 5] = torch.tensor([1e-9, 1e-9, 1e-6, 0.33, 0.33, 0.34]).log()

    found = search(table, [[5]], [3], beam_size=2, alpha=2.0)

    best_score, best_seq = exhaustive_best(table, 3, 2.0)
    assert best_seq == [3, 4, EOS]
    assert found.tokens[0, 0, 1:4].tolist() == best_seq
    assert found.scores[0, 0].item() == pytest.approx(best_score, abs=1e-5)


def test_a_sentence_stops_at_k_finished_hypotheses_even_where_a_live_beam_would_win():
    """fairseq's rule, as the beam_search docstring says: the same table as above, but
    the second beam finishes at step 1 too, so the K = 2 finished ones end the search
    before w3 w4 EOS (the exhaustive best under alpha = 2) is reached."""
    table = random_table(steps=3, vocab=6, seed=14)
    table[0, BOS] = torch.tensor([1e-9, 1e-9, 0.5, 0.4, 0.05, 0.05]).log()
    table[1, 3] = torch.tensor([1e-9, 1e-9, 0.01, 0.02, 0.95, 0.02]).log()
    table[2, 4] = torch.tensor([1e-9, 1e-9, 0.98, 0.01, 0.005, 0.005]).log()
    table[1, 4] = table[1, 5] = torch.tensor([1e-9, 1e-9, 0.9, 0.04, 0.03, 0.03]).log()

    found = search(table, [[5]], [3], beam_size=2, alpha=2.0)

    assert exhaustive_best(table, 3, 2.0)[1] == [3, 4, EOS]
    assert found.tokens[0, 0, 1:2].tolist() == [EOS]  # what the rule stops with
    assert found.scores[0, 0].item() == pytest.approx(math.log(0.5) / length_penalty(1, 2.0))


@pytest.mark.parametrize("beta", [0.2, 1.0])
def test_a_wide_beam_with_a_coverage_penalty_finds_the_exhaustive_best(beta):
    # the scripted model attends to source position t % 3 at step t
    table = random_table(steps=4, vocab=6, seed=15)

    def penalized(seq) -> float:
        coverage = [sum(t % 3 == j for t in range(len(seq))) for j in range(3)]
        return beta * sum(math.log(min(max(c, 1e-6), 1.0)) for c in coverage)

    found = search(table, [[5, 4, 3]], [4], beam_size=40, alpha=0.6, beta=beta)

    scored = [(score + penalized(seq), seq) for score, seq in exhaustive(table, 4, 0.6)]
    best_score, best_seq = max(scored)
    assert found.tokens[0, 0, 1 : len(best_seq) + 1].tolist() == best_seq
    assert found.scores[0, 0].item() == pytest.approx(best_score, abs=1e-4)


def test_sampling_among_the_top_k_draws_only_them_and_each_of_them():
    table = random_table(steps=2, vocab=8, seed=16)  # the second step must end with EOS
    table[0, BOS] = torch.tensor([-1e9, -1e9, 0.0, -0.5, -0.6, -3.0, -3.5, -4.0]).log_softmax(-1)
    src = torch.full((400, 1), 5)

    torch.manual_seed(0)
    drawn = sample(ScriptedModel(table), src, torch.ones(400, dtype=torch.long),
                   max_len=torch.full((400,), 2), temperature=1.0, top_k=3, **SPECIALS)  # fmt: skip

    first = drawn.tokens[:, 0, 1]
    assert set(first.tolist()) == {EOS, 3, 4}  # the three most likely, no other
    ended = first == EOS
    logp = table[0, BOS, first] + torch.where(ended, 0.0, table[1, first, EOS])
    assert drawn.logprob[:, 0].tolist() == pytest.approx(logp.tolist(), abs=1e-5)


def test_finished_sentences_leaving_in_groups_or_one_by_one_give_the_same_results():
    table = random_table(steps=9, vocab=7, seed=13)
    src = torch.tensor([[5], [6], [4], [5], [3], [6], [4]])
    limits = torch.tensor([9, 3, 6, 2, 9, 5, 7])
    found = [
        beam_search(
            ScriptedModel(table),
            src,
            torch.ones(7, dtype=torch.long),
            max_len=limits,
            options=BeamOptions(beam_size=3, alpha=0.6, nbest=3),
            shrink_step=shrink,
            **SPECIALS,
        )
        for shrink in (1, 2, 16)
    ]
    for other in found[1:]:
        assert other.tokens.tolist() == found[0].tokens.tolist()
        torch.testing.assert_close(other.scores, found[0].scores)


def test_beam_of_one_equals_greedy():
    table = random_table(steps=6, vocab=7, seed=3)
    src = torch.tensor([[5], [6], [5]])
    max_len = torch.tensor([6, 3, 5])

    beam = search(table, [[5], [6], [5]], [6, 3, 5], beam_size=1)
    best = greedy(
        ScriptedModel(table), src, torch.ones(3, dtype=torch.long), max_len=max_len, **SPECIALS
    )

    assert beam.tokens.tolist() == best.tokens.tolist()
    torch.testing.assert_close(beam.scores, best.scores)


def test_sampling_from_the_single_best_token_is_greedy():
    table = random_table(steps=5, vocab=7, seed=5)
    src, src_len, max_len = (
        torch.tensor([[5], [6]]),
        torch.ones(2, dtype=torch.long),
        torch.tensor([5, 5]),
    )

    drawn = sample(
        ScriptedModel(table), src, src_len, max_len=max_len, temperature=0.7, top_k=1, **SPECIALS
    )
    best = greedy(ScriptedModel(table), src, src_len, max_len=max_len, **SPECIALS)

    assert drawn.tokens.tolist() == best.tokens.tolist()


def test_every_hypothesis_respects_its_sentence_limit_and_nbest_lists_are_sorted():
    table = random_table(steps=8, vocab=6, seed=4)
    table[:, :, EOS] = -20.0  # the model never wants to stop

    found = search(table, [[5], [5]], [3, 7], beam_size=4, nbest=4)

    for sentence, limit in enumerate([3, 7]):
        for hyp in found.tokens[sentence].tolist():
            assert EOS in hyp[1 : limit + 1]
    assert (found.scores[:, :-1] >= found.scores[:, 1:]).all()


def test_min_len_and_ngram_blocking_find_the_best_allowed_output():
    table = random_table(steps=6, vocab=5, seed=6)  # words 3, 4

    def allowed(seq):
        bigrams = list(zip(seq[:-1], seq[1:], strict=True))
        return len(seq) >= 3 and len(bigrams) == len(set(bigrams))

    found = search(table, [[3]], [6], beam_size=64, min_len=3, no_repeat_ngram=2)

    best_score, best_seq = exhaustive_best(table, 6, 0.0, allowed)
    assert found.tokens[0, 0, 1 : len(best_seq) + 1].tolist() == best_seq
    assert found.scores[0, 0].item() == pytest.approx(best_score, abs=1e-5)


def test_logprob_is_the_raw_total_whatever_the_length_penalty():
    table = random_table(steps=5, vocab=6, seed=7)

    found = search(table, [[5]], [5], beam_size=3, alpha=1.0, beta=0.0)

    seq = found.tokens[0, 0, 1:].tolist()
    seq = seq[: seq.index(EOS) + 1]
    raw = sum(
        table[t, prev, tok].item()
        for t, (prev, tok) in enumerate(zip([BOS, *seq[:-1]], seq, strict=True))
    )
    assert found.logprob[0, 0].item() == pytest.approx(raw, abs=1e-5)
    assert found.scores[0, 0].item() == pytest.approx(raw / length_penalty(len(seq), 1.0), abs=1e-5)


def test_alignments_follow_the_attention_of_each_step():
    table = random_table(steps=5, vocab=6, seed=8)

    found = search(table, [[5, 4, 3]], [5], beam_size=2)  # step t attends to source t % 3

    seq = found.tokens[0, 0, 1:].tolist()
    length = seq.index(EOS) + 1
    assert found.align[0, 0, 1 : length + 1].tolist() == [t % 3 for t in range(length)]


def test_an_ensemble_of_one_model_is_that_model():
    table = random_table(steps=5, vocab=6, seed=9)
    src, src_len, max_len = (
        torch.tensor([[5], [4]]),
        torch.ones(2, dtype=torch.long),
        torch.tensor([5, 4]),
    )
    options = BeamOptions(beam_size=3, alpha=0.6)

    alone = beam_search(
        ScriptedModel(table), src, src_len, max_len=max_len, options=options, **SPECIALS
    )
    ensemble = beam_search(
        Ensemble([ScriptedModel(table)]), src, src_len, max_len=max_len, options=options, **SPECIALS
    )

    assert ensemble.tokens.tolist() == alone.tokens.tolist()
    torch.testing.assert_close(ensemble.scores, alone.scores)


def test_an_ensemble_averages_log_probabilities():
    a, b = random_table(steps=4, vocab=6, seed=10), random_table(steps=4, vocab=6, seed=11)

    found = beam_search(
        Ensemble([ScriptedModel(a), ScriptedModel(b)]),
        torch.tensor([[5]]),
        torch.ones(1, dtype=torch.long),
        max_len=torch.tensor([4]),
        options=BeamOptions(beam_size=40),
        **SPECIALS,
    )

    best_score, best_seq = exhaustive_best((a + b) / 2, 4, 0.0)
    assert found.scores[0, 0].item() == pytest.approx(best_score, abs=1e-5)
    assert found.tokens[0, 0, 1 : len(best_seq) + 1].tolist() == best_seq


@pytest.mark.parametrize("columns,k", [(40_000, 10), (8_001, 10), (250, 80), (7, 3), (64, 64)])
def test_top_k_finds_the_same_values_as_topk(columns, k):
    g = torch.Generator().manual_seed(columns)
    scores = torch.randn(6, columns, generator=g).log_softmax(-1)
    scores[0, : columns // 2] = float("-inf")  # a row like a beam search's first step
    scores[1] = scores[1].round(decimals=1)  # many ties
    values, cols = top_k(scores, k)
    assert torch.equal(values, scores.topk(k, dim=1).values)
    assert torch.equal(scores.gather(1, cols), values)
    assert int(cols.max()) < columns
    assert all(len(set(row)) == k for row in cols.tolist())  # no column taken twice


@pytest.mark.parametrize("columns", [8000, 8003, 70, 5])
def test_row_argmax_is_argmax(columns):
    g = torch.Generator().manual_seed(columns)
    scores = torch.randn(9, columns, generator=g).log_softmax(-1)
    scores[0, : columns // 2] = float("-inf")
    scores[1] = scores[1].round(decimals=0)  # ties: the first one, as argmax
    assert torch.equal(row_argmax(scores), scores.argmax(-1))

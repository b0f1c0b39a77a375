"""A stand-in with the Translator's interface that the formats' tests translate with:
each sentence changed by a plain function (identity, upper-case), word j aligned to
source word j, so where every run must land is known exactly; no model, no search."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from nmt.decoding import Hypothesis
from nmt.options import SearchOptions

WORD_START = "\u2581"


class Words:
    """A tokenizer whose pieces are whitespace-separated words (ids made as met)."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.pieces_of: list[str] = []

    def pieces(self, text: str) -> list[str]:
        return [WORD_START + word for word in text.split()]

    def encode(self, lines: list[str]) -> list[list[int]]:
        return [[self._id(p) for p in self.pieces(line)] for line in lines]

    def id_to_piece(self, ids: list[int]) -> list[str]:
        return [self.pieces_of[i - 4] for i in ids]

    def _id(self, piece: str) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces_of) + 4  # past PAD, UNK, BOS, EOS
            self.pieces_of.append(piece)
        return self.ids[piece]


class StandIn:
    """`change` maps a sentence to its "translation", word for word."""

    def __init__(
        self,
        change: Callable[[str], str] = lambda s: s,
        lang: str = "de",
        align: Callable[[int, int], int] = lambda j, n: min(j, n - 1),
    ):
        """`align(j, n)`: the source word (of n) that target word j is aligned to."""
        self.change, self.align = change, align
        self.src_tok = self.tgt_tok = Words()
        self.cfg = SimpleNamespace(data=SimpleNamespace(src_lang=lang, max_len=200))
        self.calls: list[int] = []  # how many lines each translate call had

    def translate(self, lines: list[str], *, constraints=None, **options) -> list[list[Hypothesis]]:
        """As `Translator.translate`; constraints are accepted and not honoured."""
        SearchOptions(**options)
        self.calls.append(len(lines))
        out = []
        for line in lines:
            text = self.change(line)
            tokens = tuple(self.tgt_tok.encode([text])[0])
            n = len(self.src_tok.pieces(line))
            alignment = tuple(self.align(j, n) for j in range(len(tokens)))
            out.append([Hypothesis(text, -1.0, -1.0, tokens, alignment)])
        return out


def identity() -> StandIn:
    return StandIn()


def upper() -> StandIn:
    return StandIn(str.upper)

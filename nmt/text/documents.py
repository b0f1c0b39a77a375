"""Whole lines in, whole lines out: every sentence of a line, every word of a long one.

The models learn from single sentences, so a line is first split into sentences by
sentencex (Wikimedia's segmenter; its rules chosen by the source language), and a
sentence longer than the model's limit (`data.max_len` pieces) is cut into windows at
word boundaries. All the parts of a chunk of lines are translated as one batch and
joined again with the source's own spacing: one output line per input line.

Nothing is invented: a part with no letters (numbers, emoji, punctuation, a URL), and
one the model cannot read (most of its pieces <unk>: a script it never saw), passes
through unchanged. What was split, cut or passed through is counted in one summary.

How the parts' hypotheses combine into the line's: its score, log-probability and
missed constraints are the sums of its parts'; its tokens are theirs concatenated, and
so is its alignment, each part's source positions offset by the pieces of the parts
before it (a copied part has none). The k-th of a line's n-best list joins the k-th
of each of its parts, which is not in general the line's k-th best joint translation.
Its attention (`translate_attended`) is its parts', each on the diagonal.

Constraints (`Line`): a glossary term binds the part whose source holds it
(`nmt.text.glossary`); forbidden phrases bind every part; a line with required phrases
or a prefix is not split into sentences, and where it is still cut into windows they
bind its first one (a part that would pass through is translated then).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.decoding import Hypothesis
from nmt.options import Constraints, SearchOptions
from nmt.text.glossary import Glossary
from nmt.tokenizer import EOS, UNK
from nmt.translate import Translator

URL = re.compile(r"(\w+://|www\.)\S+")
WORD_START = "\u2581"  # SentencePiece's mark of a piece that begins a word


@dataclass
class Summary:
    """What `translate_lines` did to its input, for one line on stderr."""

    lines: int = 0
    split: int = 0  # lines of more than one sentence
    sentences: int = 0
    cut: int = 0  # sentences over the length limit, cut into windows
    windows: int = 0
    no_letters: int = 0  # parts passed through: nothing to translate
    unknown_script: int = 0  # parts passed through: the model cannot read them

    def __str__(self) -> str:
        said = [_count_of(self.lines, "line"), _count_of(self.sentences, "sentence")]
        if self.split:
            said.append(f"{_count_of(self.split, 'line')} split into sentences")
        if self.cut:
            over = f"{_count_of(self.cut, 'sentence')} over the length limit"
            said.append(f"{over} cut into {self.windows} parts")
        if self.no_letters:
            said.append(f"{_count_of(self.no_letters, 'part')} without letters passed through")
        if self.unknown_script:
            unknown = (
                f"{_count_of(self.unknown_script, 'part')} in a script the model does not know"
            )
            said.append(f"{unknown} passed through untranslated")
        return ", ".join(said)


def _count_of(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Line:
    """A line of input with its own constraints and glossary (over the call's)."""

    text: str
    constraints: Constraints = Constraints()
    glossary: Glossary | None = None


@dataclass(frozen=True)
class Part:
    """A sentence of a line, or a window of one; lead + text + trail is its source."""

    line: int
    sentence: int  # its sentence's index in the line
    window: int  # its index among the sentence's windows (0: the only one, or the first)
    lead: str  # whitespace before the text, kept
    text: str
    trail: str  # whitespace after it
    copy: bool  # passed through unchanged
    pieces: int = 0  # its source pieces: where the next part's alignment starts
    constraints: Constraints | None = None


def translate_lines(
    translator: Translator, lines: Iterable[str], **options
) -> Iterator[list[Hypothesis]]:
    """The n-best translations of each whole line, in order; `options`: `translate_parts`'."""
    nbest = options.get("nbest", 1)
    for parts in translate_parts(translator, lines, **options):
        yield [_join(parts, k) for k in range(nbest)]


@dataclass(frozen=True)
class Attention:
    """What a line's hypothesis attended to: each translated part's own block on the
    diagonal, its source pieces and its output pieces each followed by </s> (a part's
    columns start one later per part before it than its alignment's source positions)."""

    source: list[str]
    target: list[str]
    weights: Tensor  # (T, S): row t is what target piece t attended to; each row sums to one


def translate_attended(
    translator: Translator, lines: Iterable[str], **options
) -> list[list[tuple[Hypothesis, Attention]]]:
    """`translate_lines`' n-best lists, each hypothesis with its `Attention`. All lines'
    hypotheses are decoded again in one `Translator.attention` call (a list: the server's
    requests are a few lines, not a stream)."""
    nbest = options.get("nbest", 1)
    lines_parts = list(translate_parts(translator, lines, **options))
    # per line and rank k: the (source text, output tokens) of each translated part
    picked = [
        [(p.text, hyps[min(k, len(hyps) - 1)].tokens) for p, hyps in parts if hyps]
        for parts in lines_parts
        for k in range(nbest)
    ]
    texts = [text for pick in picked for text, _ in pick]
    outputs = [tokens for pick in picked for _, tokens in pick]
    blocks = iter(translator.attention(texts, outputs) if texts else [])
    encoded = translator.encode(texts) if texts else []
    sources = iter(translator.src_tok.id_to_piece(ids) for ids in encoded)
    attended = iter([_attention(translator, pick, blocks, sources) for pick in picked])
    return [[(_join(parts, k), next(attended)) for k in range(nbest)] for parts in lines_parts]


def _attention(translator: Translator, pick: list, blocks: Iterator, sources: Iterator):
    """One hypothesis' `Attention` from its parts' (text, tokens), taking their blocks
    and source pieces from the shared iterators in order."""
    own = [next(blocks) for _ in pick]
    source = [piece for _ in pick for piece in next(sources)]
    target = [p for _, tokens in pick for p in translator.tgt_tok.id_to_piece([*tokens, EOS])]
    weights = torch.block_diag(*own) if own else torch.empty(0, 0)
    return Attention(source=source, target=target, weights=weights)


def translate_parts(
    translator: Translator,
    lines: Iterable[str | Line],
    *,
    split: bool = True,
    summary: Summary | None = None,
    chunk_lines: int = 1_000,
    glossary: Glossary | None = None,
    common: Constraints | None = None,
    **options,
) -> Iterator[list[tuple[Part, list[Hypothesis] | None]]]:
    """Each line's parts, each with its n-best list (None: passed through), in order;
    `options` as `translate`'s. `split=False`: the input is one sentence a line
    (over-long ones are still cut). `summary`, if given, is filled in as lines go.
    `glossary` applies to every line that has none of its own (`Line.glossary`:
    merge the two first to apply both); `common` constraints to every line, under its
    own (`Constraints.merged`)."""
    SearchOptions(**options)  # checked before any line: a chunk may have nothing to search
    summary = summary if summary is not None else Summary()
    lines = (_as_line(x, glossary, common) for x in lines)
    while chunk := list(itertools.islice(lines, chunk_lines)):
        parts = [p for i, line in enumerate(chunk) for p in _parts(translator, i, line, split)]
        _count(summary, len(chunk), parts)
        wanted = [p for p in parts if not p.copy]
        given = [p.constraints for p in wanted] if any(p.constraints for p in wanted) else None
        texts = [p.text for p in wanted]
        found = iter(translator.translate(texts, constraints=given, **options) if texts else [])
        by_line = {i: list(group) for i, group in itertools.groupby(parts, lambda p: p.line)}
        for i in range(len(chunk)):
            yield [(p, None if p.copy else next(found)) for p in by_line[i]]


def _as_line(line: str | Line, glossary: Glossary | None, common: Constraints | None) -> Line:
    line = line if isinstance(line, Line) else Line(line)
    if common:
        line = dataclasses.replace(line, constraints=common.merged(line.constraints))
    return line if line.glossary is not None else dataclasses.replace(line, glossary=glossary)


def _parts(translator: Translator, index: int, line: Line, split: bool) -> list[Part]:
    """The line's sentences (or the line), each over the limit cut into windows, each
    with its constraints."""
    from sentencex import segment

    lang, bound = translator.cfg.data.src_lang, line.constraints
    split = split and not (bound.include or bound.prefix)  # a whole line's: not split
    text = line.text
    sentences = list(segment(lang, text)) if split and text.strip() else [text]
    if "".join(sentences) != text:  # the segmenter must not lose a character
        sentences = [text]
    terms = line.glossary
    parts, first = [], bool(bound.include or bound.prefix)
    for s, sentence in enumerate(sentences):
        body = sentence.strip()
        lead = sentence[: len(sentence) - len(sentence.lstrip())]
        trail = sentence[len(lead) + len(body) :]
        spans = _windows(translator, body) if body else [(0, 0)]
        for w, (start, end) in enumerate(spans):
            window = body[start:end]
            ids = translator.src_tok.encode([window])[0] if window else []
            copy = not window or _nothing_to_translate(window) or _unreadable(translator, ids)
            own = Constraints(avoid=bound.avoid)
            if window and first:  # the line's required phrases and prefix: its first part
                own, copy, first = bound, False, False
            if terms and window:
                own = own.merged(Constraints(include=terms.constraints(window)))
            before = lead if w == 0 else body[spans[w - 1][1] : start]  # the source's own gap
            after = trail if w == len(spans) - 1 else ""
            parts.append(Part(index, s, w, before, window, after, copy, len(ids), own or None))
    return parts


def _windows(translator: Translator, text: str) -> list[tuple[int, int]]:
    """Where to cut `text` (no whitespace around it) into windows of at most the model's
    limit in pieces, each as it encodes on its own: (start, end) in `text`, in order,
    nothing but whitespace between them.

    Windows end at a word start where one fits, else at any piece, else at a character
    (one word longer than the limit). Each cut is counted by encoding the window alone,
    because text can encode to more pieces alone than inside the line (`'Hund\\0'*200`,
    `'\ufb01'*300`: SentencePiece's normalization, its word-start mark); the largest cut
    that fits is found by bisection."""
    tok, limit = translator.src_tok, translator.cfg.data.max_len

    def fits(start: int, end: int) -> bool:
        return len(tok.encode([text[start:end].rstrip()])[0]) <= limit

    if fits(0, len(text)):
        return [(0, len(text))]
    pieces = tok.piece_starts(text)
    windows, start = [], 0
    while start < len(text):
        first = next((i for i, (at, _) in enumerate(pieces) if at >= start), len(pieces))
        guess = pieces[first + limit][0] if first + limit < len(pieces) else len(text)
        if fits(start, guess) and guess == len(text):
            end = guess
        else:
            words = [at for at, word in pieces if start < at <= guess and word]
            any_piece = [at for at, _ in pieces if start < at <= guess]
            characters = list(range(start + 1, guess + 1))
            end = next(
                (
                    cut
                    for cuts in (words, any_piece, characters)
                    if (cut := _largest(cuts, fits, start))
                ),
                start + 1,  # one character over the limit (a limit of 1 or 2): it alone
            )
        windows.append((start, len(text[:end].rstrip())))
        start = end + len(text[end:]) - len(text[end:].lstrip())
    return windows


def _largest(cuts: list[int], fits, start: int) -> int | None:
    """The largest of the ascending `cuts` for which `fits(start, cut)`, by bisection
    (pieces grow with the cut); None if not even the smallest fits."""
    if not cuts or not fits(start, cuts[0]):
        return None
    low, high = 0, len(cuts) - 1  # cuts[low] fits
    while low < high:
        middle = (low + high + 1) // 2
        if fits(start, cuts[middle]):
            low = middle
        else:
            high = middle - 1
    return cuts[low]


def _nothing_to_translate(text: str) -> bool:
    return not any(c.isalpha() for c in text) or bool(URL.fullmatch(text))


def _unreadable(translator: Translator, ids: list[int]) -> bool:
    """Most (over half) of a text's pieces (`ids`) that carry letters are <unk>: a script
    the model never saw."""
    pieces = translator.src_tok.id_to_piece(ids)
    lettered = [i for i, p in zip(ids, pieces, strict=True) if i == UNK or any(map(str.isalpha, p))]
    return sum(i == UNK for i in lettered) * 2 > len(lettered)


def _count(summary: Summary, lines: int, parts: list[Part]) -> None:
    summary.lines += lines
    sentences = {(p.line, p.sentence) for p in parts}
    summary.sentences += len(sentences)
    summary.split += len({line for line, s in sentences if s > 0})
    cut = {(p.line, p.sentence) for p in parts if p.window > 0}
    summary.cut += len(cut)
    summary.windows += sum((p.line, p.sentence) in cut for p in parts)
    copied = [p for p in parts if p.copy and p.text]
    summary.no_letters += sum(_nothing_to_translate(p.text) for p in copied)
    summary.unknown_script += sum(not _nothing_to_translate(p.text) for p in copied)


def _join(parts: list[tuple[Part, list | None]], k: int) -> Hypothesis:
    """The line's k-th hypothesis: each part's k-th, joined (the module's rules)."""
    text, score, logprob, tokens, alignment, offset, missed = "", 0.0, 0.0, [], [], 0, 0
    for part, hyps in parts:
        if hyps is None:
            text += part.lead + part.text + part.trail
            continue
        hyp = hyps[min(k, len(hyps) - 1)]
        text += part.lead + hyp.text + part.trail
        score, logprob = score + hyp.score, logprob + hyp.logprob
        tokens += hyp.tokens
        alignment += [i + offset if i >= 0 else i for i in hyp.alignment]
        offset += part.pieces
        missed += hyp.missed
    return Hypothesis(text, score, logprob, tuple(tokens), tuple(alignment), missed)

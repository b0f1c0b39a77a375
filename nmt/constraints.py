"""Lexical constraints for beam search: phrases an output must contain, phrases it must
not, and a prefix it must begin with, per sentence, as tensors that follow the batch.

Shapes: A sentences in the batch, K beams, R decoder rows per sentence (1 at the first
step, else K), M candidates per sentence, C required constraints (each a choice of J
alternative phrases: any one meets it), P the longest of them in pieces, F forbidden
phrases of up to Q pieces, V vocabulary size. Padding is -1 in phrases, 0 in lengths.

Required phrases are met by dynamic beam allocation (Post and Vilar 2018) in its
vectorised form (Hu et al. 2019): each step's candidates are the search's 2K best, each
row's best token and each row's next token of every phrase it has yet to complete; the
K that continue are taken round-robin from banks of equal progress (pieces produced),
best first in each, so hypotheses that met more constraints keep their place beside
better-scoring ones that met fewer. Progress is exact: per phrase, the set of its
prefixes that end the output (int64 bits, shift-and: a a b after a a a is found). After
a whole required phrase a piece that would continue its word is banned ("turf" never
"turfed") but for one that goes on with another phrase, and then the first is not met
("hound" in "hounds"); after a prefix typed with a final space no piece attaches. An
output that misses a constraint ranks below all that do not (`rank_key`): returned only
where none met them all, and counted. Forbidden phrases and the prefix are step rules:
a forbidden phrase's last piece is banned after the rest of it; in the prefix a row may
only produce its next piece, at the model's log-probability (the user's text wins).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.kernels.topk import row_argmax
from nmt.scoring import NEG_INF, Rule, Step, apply

STARTS, ATTACHES, CONTINUES = 0, 1, 2  # a piece's `glued` code: word (or control), ",", "ing"
UNMET = 1e4  # what ranks an output that missed a constraint below those that did not


@dataclass(frozen=True)
class Targets:
    """One sentence's constraints in target piece ids (no BOS, EOS or padding)."""

    include: tuple[tuple[tuple[int, ...], ...], ...] = ()  # each: alternatives, any one
    avoid: tuple[tuple[int, ...], ...] = ()
    prefix: tuple[int, ...] = ()
    prefix_ends_word: bool = False  # what follows the prefix starts a word

    @property
    def room(self) -> int:
        """Output pieces the constraints take at least: the prefix and each constraint's
        shortest alternative."""
        return len(self.prefix) + sum(min(map(len, c)) for c in self.include)

    def __bool__(self) -> bool:
        return bool(self.include or self.avoid or self.prefix)


class Phrases(NamedTuple):
    """The batch's constraints, (A, ...) each; a sentence without any has all padding."""

    include: Tensor  # (A, C, J, P) piece ids, left-aligned
    include_len: Tensor  # (A, C, J) 0: no such alternative
    avoid: Tensor  # (A, F, Q) piece ids, right-aligned: the last column is the banned piece
    avoid_len: Tensor  # (A, F)
    prefix: Tensor  # (A, T) piece ids
    prefix_len: Tensor  # (A,)
    word_at: Tensor  # (A,) the step that must start a word (the prefix's end), or -1
    banked: Tensor  # (A,) has required phrases: chooses its beams by banks
    glued: Tensor  # (A, V) `GLUED` codes (the same row), (A, 0): not known


def pack(targets: Sequence[Targets | None], device, glued: Tensor | None = None) -> Phrases | None:
    """The batch's `Phrases`, or None where no sentence has a constraint (the search
    then runs exactly as without this module). `glued` (V,): each piece's `GLUED` code
    (without: no piece is banned after a phrase or a prefix)."""
    targets = [t or Targets() for t in targets]
    if not any(targets):
        return None
    A = len(targets)
    C = max(1, max(len(t.include) for t in targets))
    J = max([1] + [len(c) for t in targets for c in t.include])
    P = max([1] + [len(a) for t in targets for c in t.include for a in c])
    if P > 62:  # `advance` keeps a phrase's matched prefixes as the bits of an int64
        raise ValueError(f"a required phrase of {P} pieces: at most 62")
    Fn = max(1, max(len(t.avoid) for t in targets))
    Q = max([1] + [len(a) for t in targets for a in t.avoid])
    T = max(1, max(len(t.prefix) for t in targets))
    include = torch.full((A, C, J, P), -1, dtype=torch.long)
    include_len = torch.zeros(A, C, J, dtype=torch.long)
    avoid = torch.full((A, Fn, Q), -1, dtype=torch.long)
    avoid_len = torch.zeros(A, Fn, dtype=torch.long)
    prefix = torch.full((A, T), -1, dtype=torch.long)
    for a, target in enumerate(targets):
        for c, choice in enumerate(target.include):
            for j, phrase in enumerate(choice):
                include[a, c, j, : len(phrase)] = torch.tensor(phrase)
                include_len[a, c, j] = len(phrase)
        for f, phrase in enumerate(target.avoid):
            avoid[a, f, Q - len(phrase) :] = torch.tensor(phrase)
            avoid_len[a, f] = len(phrase)
        prefix[a, : len(target.prefix)] = torch.tensor(target.prefix, dtype=torch.long)
    prefix_len = torch.tensor([len(t.prefix) for t in targets])
    ends = torch.tensor([t.prefix_ends_word and bool(t.prefix) for t in targets])
    word_at = torch.where(ends, prefix_len, -1)
    banked = include_len.sum((1, 2)) > 0
    glued = (torch.zeros(0, dtype=torch.int8) if glued is None else glued)[None].expand(A, -1)
    parts = (include, include_len, avoid, avoid_len, prefix, prefix_len, word_at, banked, glued)
    return Phrases(*(x.to(device) for x in parts))


def start(phrases: Phrases, K: int) -> tuple[Tensor, Tensor]:
    """Every beam's state before its first piece: met (A, K, C), true for the padding
    constraints, and matched (A, K, C, J), zero."""
    met = (phrases.include_len.sum(-1) == 0)[:, None].expand(-1, K, -1).clone()
    return met, torch.zeros_like(phrases.include_len)[:, None].expand(-1, K, -1, -1).clone()


def apply_rules(rules: Sequence[Rule], logp: Tensor, step: Step, phrases: Phrases | None, *,
                pad: int, matched: Tensor | None = None):  # fmt: skip
    """`rules`, then the forbidden phrases, the glued pieces after a whole required one
    (matched (A, K, C, J): the rows') or a prefix that ends a word, and the prefix, on
    logp (A * R, V) in place."""
    if phrases is None:
        return apply(rules, logp, step)
    A = phrases.prefix.size(0)
    R, T = logp.size(0) // A, phrases.prefix.size(1)
    forced = phrases.prefix[:, step.t] if step.t < T else None  # (A,) -1: past the prefix
    if forced is not None:  # the model's own log-probability of the prefix piece
        index = forced.clamp(min=0)[:, None, None].expand(A, R, 1)
        held = logp.view(A, R, -1).gather(2, index)
    logp = apply(rules, logp, step)
    rows = logp.view(A, R, -1)
    _avoid(rows, step.tokens.reshape(A, R, -1), phrases, pad)
    if phrases.glued.size(-1):
        _unglue(logp.view(A * R, -1), step.t, matched[:, :R], phrases)
    if forced is not None:
        on = (forced >= 0)[:, None, None]  # (A, 1, 1); elsewhere PAD's own value goes back
        kept = torch.where(on, held, rows.gather(2, index))
        rows.masked_fill_(on, NEG_INF).scatter_(2, index, kept)
    return logp


def _unglue(rows: Tensor, t: int, matched: Tensor, phrases: Phrases) -> None:
    """Bans the glued pieces in the rows (A * R, V) that end a prefix that ends a word,
    or a whole required phrase, there except a piece that goes on with a phrase under
    way (after "hound", the "s" of "hounds"). Only in those rows: a pass over all
    costs more."""
    A, R = matched.shape[:2]
    whole = _whole(matched, phrases).flatten(2).any(-1)  # (A, R)
    typed = (phrases.word_at == t)[:, None].expand_as(whole)  # the user's space wins
    ending = (whole | typed).flatten().nonzero()[:, 0]  # (n,) rows
    if not ending.numel():
        return
    sentence = ending // R
    going_on = _following(matched.flatten(0, 1)[ending], *_of(phrases, sentence))  # (n, C, J)
    going_on = going_on.masked_fill(typed.flatten()[ending, None, None], -1).flatten(1)
    at = going_on.clamp(min=0)  # -1: none, and PAD (0) is never glued: it keeps its value
    some = rows[ending]
    kept = some.gather(1, at)
    codes = phrases.glued[0].expand(len(ending), -1)  # a typed space: no piece attaches
    ban = torch.where(typed.flatten()[ending, None], codes >= ATTACHES, codes == CONTINUES)
    some.masked_fill_(ban, NEG_INF).scatter_(1, at, kept)
    rows[ending] = some


def _avoid(rows: Tensor, tokens: Tensor, phrases: Phrases, pad: int) -> None:
    """Bans, in rows (A, R, V), each forbidden phrase's last piece where the row's output
    so far (tokens (A, R, t + 1)) ends with the rest of it."""
    context = phrases.avoid[:, None, :, :-1]  # (A, 1, F, Q - 1), -1: any piece
    last = tokens[..., tokens.size(-1) - context.size(-1) :]
    last = F.pad(last, (context.size(-1) - last.size(-1), 0), value=-2)  # before BOS
    ends = ((last[:, :, None] == context) | (context < 0)).all(-1)  # (A, R, F)
    ends &= phrases.avoid_len[:, None] > 0
    banned = torch.where(ends, phrases.avoid[:, None, :, -1], pad)  # PAD is banned anyway
    rows.scatter_(2, banned, NEG_INF)


class Choice(NamedTuple):
    """The banks' choice of a step's candidates, as the search's own 2K: K that continue
    (in `keep`'s order), then K among which those that end may finish."""

    score: Tensor  # (A, 2K) total log-probability
    flat: Tensor  # (A, 2K) index into total (A, R * V): parent row * V + piece
    met: Tensor  # (A, 2K, C)
    matched: Tensor  # (A, 2K, C, J)
    finishing: Tensor  # (A, 2K)
    keep: Tensor  # (A, K): 0 ... K - 1
    alive_score: Tensor  # (A, K) -inf where too few could continue


def choose(total: Tensor, flat: Tensor, alive, eos: int, phrases: Phrases, K: int) -> Choice:
    """The step's choice for the banked sentences, from total (A, R, V), the search's 2K
    best (`flat`) and the live beams (`alive`: search's Beams, (A, K, ...))."""
    A, R, V = total.shape
    met, matched = alive.met[:, :R], alive.matched[:, :R]
    score, flat = candidates(total, flat, met, matched, phrases)  # (A, M), best first
    beam, token = flat // V, flat % V
    met, matched = advance(token, _gather(met, beam), _gather(matched, beam), phrases)
    ends = token == eos
    nbanks = phrases.include.size(1) * phrases.include.size(-1) + 1  # at most C * P pieces
    now = met_now(met, matched, phrases)  # EOS has confirmed an ended one's phrases
    bank = banks(now, matched, phrases)
    finishes, keep, alive_score = allocate(score, ends, now, bank, K, nbanks)
    # a row has one EOS: at most R <= K candidates end, so K places hold all of them
    ending = (ends & finishes).long().topk(K, dim=1).indices
    picked = torch.cat([keep, ending], 1)
    finishing = torch.cat([torch.zeros_like(keep, dtype=torch.bool), finishes.gather(1, ending)], 1)
    firsts = torch.arange(K, device=total.device).expand(A, K)
    parts = (score.gather(1, picked), flat.gather(1, picked), _gather(met, picked))
    return Choice(*parts, _gather(matched, picked), finishing, firsts, alive_score)


def candidates(total: Tensor, flat: Tensor, met: Tensor, matched: Tensor, phrases: Phrases):
    """total (A, R, V) scores of every continuation, flat (A, 2K) the search's best ->
    (A, M) scores, best first, and flat indices: those, each row's best and each row's
    next piece of every phrase it has yet to complete (met (A, R, C), matched
    (A, R, C, J) the rows'), each once (a repeat scores -inf)."""
    A, R, V = total.shape
    row = torch.arange(R, device=total.device)[None, :, None, None] * V
    following = _following(matched, *_of(phrases))  # (A, R, C, J)
    open_ = (following >= 0) & ~met[..., None]
    forced = torch.where(open_, row + following, -1).flatten(1)
    best = row_argmax(total.reshape(A * R, V)).view(A, R) + row[..., 0, 0]
    every = torch.cat([flat, best, forced], 1)  # (A, M)
    ordered, order = every.sort(dim=1)
    repeat = F.pad(ordered[:, 1:] == ordered[:, :-1], (1, 0), value=False)
    drop = torch.zeros_like(repeat).scatter_(1, order, repeat) | (every < 0)
    score = total.reshape(A, -1).gather(1, every.clamp(min=0)).masked_fill(drop, NEG_INF)
    score, by_score = score.sort(dim=1, descending=True)
    return score, every.gather(1, by_score).clamp(min=0)


def advance(token: Tensor, met: Tensor, matched: Tensor, phrases: Phrases):
    """Candidates (A, M) ending in `token`, their parents' met (A, M, C) and matched
    (A, M, C, J) -> theirs: bit s - 1 of matched says the output ends with the phrase's
    first s pieces (Baeza-Yates and Gonnet's shift-and: exact where a phrase overlaps
    itself). Where the glued pieces are known, a whole phrase is met once the next piece
    (EOS included) does not go on with its word; `met_now` adds those the output ends with."""
    if glued := phrases.glued.size(-1) > 0:  # the parents' whole phrases this piece keeps
        going_on = (phrases.glued[0][token] == CONTINUES)[..., None, None]
        met = met | (_whole(matched, phrases) & ~going_on).any(-1)
    P = phrases.include.size(-1)
    hit = phrases.include[:, None] == token[:, :, None, None, None]  # (A, M, C, J, P)
    fits = (hit * (1 << torch.arange(P, device=token.device))).sum(-1)
    matched = ((matched << 1) | 1) & fits
    return (met if glued else met_now(met, matched, phrases)), matched


def met_now(met: Tensor, matched: Tensor, phrases: Phrases) -> Tensor:
    """met (A, X, C), and the phrases the output ends with (matched (A, X, C, J))."""
    return met | _whole(matched, phrases).any(-1)


def _whole(matched: Tensor, phrases: Phrases) -> Tensor:
    """matched (A, X, C, J) -> (A, X, C, J): the output ends with the whole phrase."""
    length = phrases.include_len[:, None]
    return ((matched >> (length - 1).clamp(min=0)) & 1).bool() & (length > 0)


def _of(phrases: Phrases, sentence: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The required phrases (..., C, J, P) and their lengths (..., C, J) of the `sentence`
    of each row, or of every sentence (A, 1, C, J, P) to meet its rows (A, X, ...)."""
    if sentence is None:
        return phrases.include[:, None], phrases.include_len[:, None]
    return phrases.include[sentence], phrases.include_len[sentence]


def _following(matched: Tensor, include: Tensor, length: Tensor) -> Tensor:
    """matched (..., C, J) of the phrases include (..., C, J, P) of lengths (..., C, J)
    -> each phrase's piece after the most of it the output ends with; -1 where it ends
    with all of it, or there is no such phrase."""
    P = include.size(-1)
    done = _longest(matched, P)
    include = include.expand(*matched.shape, P)
    piece = include.gather(-1, done.clamp(max=P - 1)[..., None]).squeeze(-1)
    return torch.where(done < length, piece, -1)


def _longest(matched: Tensor, P: int) -> Tensor:
    """matched (...) -> (...): the most pieces of the phrase that the output ends with."""
    bits = (matched[..., None] >> torch.arange(P, device=matched.device)) & 1
    return (bits * torch.arange(1, P + 1, device=matched.device)).amax(-1)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """x (A, K, ...) and index (A, J) -> (A, J, ...)."""
    expanded = index.view(*index.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
    return x.gather(1, expanded)


def banks(met: Tensor, matched: Tensor, phrases: Phrases) -> Tensor:
    """Each hypothesis' constraint pieces produced (A, M): a met constraint counts its
    shortest alternative's length, an open one its progress, less than that."""
    length = phrases.include_len
    shortest = length.masked_fill(length == 0, 1 << 20).amin(-1) * (length.amax(-1) > 0)
    progress = _longest(matched, phrases.include.size(-1)).amax(-1)  # (A, M, C)
    partial = torch.minimum(progress, (shortest - 1).clamp(min=0)[:, None])
    return torch.where(met, shortest[:, None], partial).sum(-1)  # padding: met, 0 long


def allocate(score: Tensor, ends: Tensor, met: Tensor, bank: Tensor, K: int, nbanks: int):
    """Candidates (A, M) sorted by score (best first) -> which may finish (A, M), the K
    that continue (A, K), in order of score, and their scores (-inf: none was left).

    A candidate ending in EOS finishes if it ranks among the K best of those that met
    their constraints as it did (all or not all): the search's own rule among outputs
    that met them. The K that continue are taken round-robin over the banks (highest
    first), best first within each: rank r in its bank, then bank, orders them."""
    valid, complete = score > NEG_INF, met.all(-1)
    kinds = torch.stack([valid & complete, valid & ~complete], -1).long()  # (A, M, 2)
    before = kinds.cumsum(1) - kinds  # better candidates of each kind
    finishes = ends & valid & (torch.where(complete, before[..., 0], before[..., 1]) < K)
    going = valid & ~ends
    crowd = F.one_hot(bank, nbanks) * going[..., None]  # (A, M, banks)
    rank = crowd.cumsum(1).gather(2, bank[..., None]).squeeze(-1) - 1
    filler = (1 << 40) + torch.arange(score.size(1), device=score.device)  # too few: any
    order = torch.where(going, rank * nbanks + (nbanks - 1 - bank), filler)
    keep = order.topk(K, dim=1, largest=False).indices.sort(dim=1).values
    kept = score.masked_fill(~going, NEG_INF).gather(1, keep)
    best_first = kept.argsort(dim=1, descending=True, stable=True)  # -inf (too few) last
    return finishes, keep.gather(1, best_first), kept.gather(1, best_first)


def rank_key(score: Tensor, met: Tensor | None) -> Tensor:
    """Finished hypotheses' order: score, below all others where a constraint is unmet
    (exactly the score where all are met: unconstrained sentences keep today's order)."""
    return score if met is None else score - UNMET * (~met.all(-1)).float()


def complete(score: Tensor, met: Tensor | None) -> Tensor:
    """Finished hypotheses' scores (A, K), -inf where one missed a constraint: those
    count for no stopping rule."""
    return score if met is None else score.masked_fill(~met.all(-1), NEG_INF)


def missed(met: Tensor | None) -> Tensor | None:
    """(B, n, C) -> (B, n) constraints each hypothesis did not meet."""
    return None if met is None else (~met).sum(-1)


def pick(mask: Tensor, a: tuple, b: tuple) -> tuple:
    """Per sentence (mask (A,)), a's or b's: tensors (A, ...) in (nested) tuples; None
    stays None. The banked sentences take the banks' choice, the others keep theirs."""
    if isinstance(a, tuple):
        picked = [pick(mask, x, y) for x, y in zip(a, b, strict=True)]
        return type(a)(*picked) if hasattr(a, "_fields") else tuple(picked)
    return None if a is None else torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)

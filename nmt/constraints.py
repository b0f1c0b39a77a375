"""Lexical constraints for beam search: phrases an output must contain, phrases it must
not, and a prefix it must begin with, per sentence, as tensors that follow the batch.

Shapes: A sentences in the batch, K beams, R decoder rows per sentence (1 at the first
step, else K), M candidates per sentence, C required constraints (each a choice of J
alternative phrases: any one meets it), P the longest of them in pieces, F forbidden
phrases of up to Q pieces, V vocabulary size. Padding is -1 in phrases, 0 in lengths.

Required phrases are met by dynamic beam allocation (Post and Vilar 2018) in its
vectorised form (Hu et al. 2019): each step's candidates are the search's 2K best, each
row's best token and each row's next token of every phrase it has yet to complete; the
K that continue are taken round-robin from banks of equal progress (constraint pieces
produced), best first in each bank, so that hypotheses that met more constraints keep
their place beside better-scoring ones that met fewer. Progress is exact: a phrase's
progress is the longest prefix of it that ends the output, so overlapping phrases
(a a b after a a a) are found. Right after a whole required phrase, pieces that would
continue its last word (`glued`) are banned: "turf" must not become "turfed". A
hypothesis that ends without meeting all of its constraints ranks below every one
that does (`rank_key`): the best of those is only returned where no hypothesis met
them within the length limit, and is counted.

Forbidden phrases and the prefix are step rules: the last piece of a forbidden phrase
is banned where the row just produced the rest of it; during the prefix a row may only
produce the prefix's next piece, at the model's own log-probability, whatever the other
rules said (the user's text wins over n-gram blocking or a forbidden phrase).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.scoring import NEG_INF, Rule, Step, apply

UNMET = 1e4  # what ranks an output that missed a constraint below those that did not


@dataclass(frozen=True)
class Targets:
    """One sentence's constraints in target piece ids (no BOS, EOS or padding)."""

    include: tuple[tuple[tuple[int, ...], ...], ...] = ()  # each: alternatives, any one
    avoid: tuple[tuple[int, ...], ...] = ()
    prefix: tuple[int, ...] = ()

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
    banked: Tensor  # (A,) has required phrases: chooses its beams by banks
    glued: Tensor  # (A, V) pieces that continue a word, (A, 0) where not known


def pack(targets: Sequence[Targets | None], device, glued: Tensor | None = None) -> Phrases | None:
    """The batch's `Phrases`, or None where no sentence has a constraint (the search
    then runs exactly as without this module). `glued` (V,): the vocabulary's pieces
    that continue a word (without: none are banned after a phrase)."""
    targets = [t or Targets() for t in targets]
    if not any(targets):
        return None
    A = len(targets)
    C = max(1, max(len(t.include) for t in targets))
    J = max([1] + [len(c) for t in targets for c in t.include])
    P = max([1] + [len(a) for t in targets for c in t.include for a in c])
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
    banked = include_len.sum((1, 2)) > 0
    glued = (torch.zeros(0, dtype=torch.bool) if glued is None else glued)[None].expand(A, -1)
    parts = (include, include_len, avoid, avoid_len, prefix, prefix_len, banked, glued)
    return Phrases(*(x.to(device) for x in parts))


def start(phrases: Phrases, K: int) -> tuple[Tensor, Tensor]:
    """Every beam's state before its first piece: met (A, K, C), true for the padding
    constraints, and progress (A, K, C, J), zero."""
    met = (phrases.include_len.sum(-1) == 0)[:, None].expand(-1, K, -1).clone()
    return met, torch.zeros_like(phrases.include_len)[:, None].expand(-1, K, -1, -1).clone()


def apply_rules(rules: Sequence[Rule], logp: Tensor, step: Step, phrases: Phrases | None, *,
                pad: int, progress: Tensor | None = None):  # fmt: skip
    """`rules`, then the forbidden phrases, the glued pieces after a whole required one
    (progress (A, K, C, J): the rows') and the prefix, on logp (A * R, V) in place."""
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
        length = phrases.include_len[:, None]  # (A, 1, C, J)
        whole = (progress[:, :R] == length) & (length > 0)
        rows.masked_fill_(whole.flatten(2).any(-1)[..., None] & phrases.glued[:, None], NEG_INF)
    if forced is not None:
        on = (forced >= 0)[:, None, None]  # (A, 1, 1); elsewhere PAD's own value goes back
        kept = torch.where(on, held, rows.gather(2, index))
        rows.masked_fill_(on, NEG_INF).scatter_(2, index, kept)
    return logp


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


def candidates(total: Tensor, flat: Tensor, met: Tensor, progress: Tensor, phrases: Phrases):
    """total (A, R, V) scores of every continuation, flat (A, 2K) the search's best ->
    (A, M) flat indices: those, each row's best and each row's next piece of every
    phrase it has yet to complete (met (A, R, C), progress (A, R, C, J) the rows')."""
    A, R, V = total.shape
    include = phrases.include[:, None].expand(-1, R, -1, -1, -1)  # (A, R, C, J, P)
    at = progress.clamp(max=include.size(-1) - 1)[..., None]  # whole: met, not open
    following = include.gather(-1, at).squeeze(-1)  # (A, R, C, J)
    open_ = (phrases.include_len[:, None] > 0) & ~met[..., None]
    wanted = torch.zeros(A, R, V, dtype=torch.bool, device=total.device)
    wanted.scatter_(2, torch.where(open_, following, 0).flatten(2), True)  # 0: never valid
    wanted.scatter_(2, total.argmax(-1, keepdim=True), True)
    wanted = wanted.view(A, -1).scatter_(1, flat, True)
    M = min(R * V, flat.size(1) + R + following[0].numel())
    return total.view(A, -1).masked_fill(~wanted, NEG_INF).topk(M, dim=1)


def advance(tokens: Tensor, t: int, met: Tensor, phrases: Phrases) -> tuple[Tensor, Tensor]:
    """The state of candidates (A, M, L) whose piece t is new, from their parents' met
    (A, M, C): -> met (A, M, C), progress (A, M, C, J) (the longest prefix of each
    phrase that the output ends with: its length where it ends with all of it)."""
    P = phrases.include.size(-1)
    window = tokens[..., max(0, t + 1 - P) : t + 1]
    window = F.pad(window, (P - window.size(-1), 0), value=-2)  # (A, M, P)
    size = torch.arange(1, P + 1, device=tokens.device)  # a suffix of `size` pieces ...
    i = torch.arange(P, device=tokens.device)
    cares = i < size[:, None]  # (P, P) ... compared with the phrase's first `size`
    ending = window[..., (P - size[:, None] + i).clamp(max=P - 1)]  # (A, M, P, P)
    same = ending[:, :, None, None] == phrases.include[:, None, :, :, None]  # (A,M,C,J,P,P)
    matches = (same | ~cares).all(-1)  # (A, M, C, J, P): the output ends with a prefix
    length = phrases.include_len[:, None]  # (A, 1, C, J)
    last = (length - 1).clamp(min=0)[..., None].expand(*matches.shape[:-1], 1)
    whole = matches.gather(-1, last).squeeze(-1) & (length > 0)
    within = matches & (size <= length[..., None])
    return met | whole.any(-1), (within * size).amax(-1)


def banks(met: Tensor, progress: Tensor, phrases: Phrases) -> Tensor:
    """Each hypothesis' constraint pieces produced (A, M): a met constraint counts its
    shortest alternative's length, an open one its progress, less than that."""
    length = phrases.include_len
    shortest = length.masked_fill(length == 0, 1 << 20).amin(-1) * (length.amax(-1) > 0)
    partial = torch.minimum(progress.amax(-1), (shortest - 1).clamp(min=0)[:, None])
    return torch.where(met, shortest[:, None], partial).sum(-1)  # padding: met, 0 long


def choose(cand, t: int, ends: Tensor, phrases: Phrases, K: int):
    """Candidates `cand` (search's Beams, (A, M, ...), sorted by score) whose piece t is
    new -> them with their constraint state, and `allocate`'s choice."""
    met, progress = advance(cand.tokens, t, cand.met, phrases)
    bank = banks(met, progress, phrases)
    nbanks = phrases.include.size(1) * phrases.include.size(-1) + 1  # at most C * P pieces
    chosen = allocate(cand.score, ends, met, bank, K, nbanks)
    return cand._replace(met=met, progress=progress), chosen


def allocate(score: Tensor, ends: Tensor, met: Tensor, bank: Tensor, K: int, nbanks: int):
    """Candidates (A, M) sorted by score (best first) -> which may finish (A, M), the K
    that continue (A, K), in order of score, and their scores (-inf: none was left).

    A candidate ending in EOS finishes if it ranks among the K best of those that met
    their constraints as it did (all or not all): the search's own rule among outputs
    that met them. The K that continue are taken round-robin over the banks (highest
    first), best first within each: rank r in its bank, then bank, orders them."""
    valid = score > NEG_INF
    complete = met.all(-1)
    same_kind = complete[:, :, None] == complete[:, None, :]  # (A, M, M)
    before = (same_kind & valid[:, None]).tril(-1).sum(-1)  # (A, M): better of its kind
    finishes = ends & valid & (before < K)
    going = valid & ~ends
    crowd = F.one_hot(bank, nbanks) * going[..., None]  # (A, M, banks)
    rank = crowd.cumsum(1).gather(2, bank[..., None]).squeeze(-1) - 1
    order = torch.where(going, rank * nbanks + (nbanks - 1 - bank), 1 << 40)
    keep = order.topk(K, dim=1, largest=False).indices.sort(dim=1).values
    return finishes, keep, score.masked_fill(~going, NEG_INF).gather(1, keep)


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

"""Glossaries: source terms, and the target terms a translation must use for them.

A glossary file is UTF-8 TSV, a term a line: `source term<TAB>target term`, more
targets in more columns; a source term on several lines gathers all their targets, and
any one of them meets it (a disjunctive constraint: "Lieferant" -> "vendor" or
"supplier"). Blank lines and lines starting with "#" are skipped.

Matching is on the words of the source (runs of letters and digits, with - and '
inside: "E-Mail" is one word), exactly or, with `ignore_case`, case-folded; there is no
inflection: each form ("Hund", "Hunde", "Hundes") is its own entry. Where two matches
overlap the longer one wins. A target term becomes a constraint of a sentence (a part
of a line: `nmt.text.documents`) only when its source term occurs in that sentence, and
once, however often it occurs there.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nmt.data import iter_lines
from nmt.errors import NmtError
from nmt.options import Constraints
from nmt.translate import Translator

WORD = re.compile(r"\w+(?:[-'’]\w+)*")
MAX_TERMS = 100_000


class GlossaryError(NmtError):
    """A glossary that cannot be read: the message names the file (or field) and line."""


@dataclass(frozen=True)
class Glossary:
    terms: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (source words, targets)
    ignore_case: bool = False

    @classmethod
    def read(cls, path: Path, *, ignore_case: bool = False) -> Glossary:
        rows = []
        for number, line in enumerate(iter_lines(path), 1):
            if line.strip() and not line.startswith("#"):
                rows.append((f"{path} line {number}", *line.split("\t")))
        if not rows:
            raise GlossaryError(f"{path} has no terms")
        return cls.of(rows, ignore_case=ignore_case)

    @classmethod
    def of(cls, rows: Iterable[tuple[str, ...]], *, ignore_case: bool = False) -> Glossary:
        """From (where, source, target, ...) rows; `where` names a row in errors."""
        gathered: dict[tuple[str, ...], list[str]] = {}
        for where, source, *targets in rows:
            words = tuple(WORD.findall(source))
            if not words:
                raise GlossaryError(f"{where}: the source term {source!r} has no word")
            targets = [t.strip() for t in targets if t.strip()]
            if not targets:
                raise GlossaryError(f"{where}: {source!r} has no target term (TAB-separated)")
            try:
                Constraints(include=(tuple(targets),))  # the same checks as any constraint
            except NmtError as err:
                raise GlossaryError(f"{where}: {err}") from None
            key = tuple(w.casefold() for w in words) if ignore_case else words
            known = gathered.setdefault(key, [])
            known += [t for t in targets if t not in known]
            if len(gathered) > MAX_TERMS:
                raise GlossaryError(f"{where}: over {MAX_TERMS} terms")
        terms = tuple((words, tuple(targets)) for words, targets in gathered.items())
        return cls(terms, ignore_case)

    def check(self, translator: Translator) -> None:
        """Refuses (an OptionError) a target term `translator`'s model cannot write."""
        for _, targets in self.terms:
            translator.targets(Constraints(include=(targets,)))

    def merged(self, other: Glossary | None) -> Glossary:
        """This glossary with `other`'s terms, whose targets replace ours for a term in
        both; matched as this one says about case."""
        if not other:
            return self
        fold = (lambda w: w.casefold()) if self.ignore_case else (lambda w: w)
        mine = dict(self.terms)
        mine.update({tuple(map(fold, words)): targets for words, targets in other.terms})
        return Glossary(tuple(mine.items()), self.ignore_case)

    def constraints(self, text: str) -> tuple[tuple[str, ...], ...]:
        """The target terms `text` needs: each a choice of renderings, in source order."""
        words = WORD.findall(text)
        if self.ignore_case:
            words = [w.casefold() for w in words]
        found = []  # (start, end, targets) of every match
        for start, word in enumerate(words):
            for size, term in self._by_first.get(word, ()):
                if tuple(words[start : start + size]) == term:
                    found.append((start, start + size, self._targets[term]))
        taken: list[tuple[int, int, tuple[str, ...]]] = []
        for start, end, targets in sorted(found, key=lambda m: (m[0] - m[1], m[0])):
            if all(end <= s or e <= start for s, e, _ in taken):  # the longest first
                taken.append((start, end, targets))
        return tuple(dict.fromkeys(targets for _, _, targets in sorted(taken)))

    @functools.cached_property
    def _targets(self) -> dict[tuple[str, ...], tuple[str, ...]]:
        return dict(self.terms)

    @functools.cached_property
    def _by_first(self) -> dict[str, list[tuple[int, tuple[str, ...]]]]:
        """Terms by their first word: (size, words), the longest first."""
        index: dict[str, list] = {}
        for words, _ in self.terms:
            index.setdefault(words[0], []).append((len(words), words))
        return {word: sorted(terms, reverse=True) for word, terms in index.items()}

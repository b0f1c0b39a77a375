"""gettext .po catalogues: each entry's msgid (and msgid_plural) translated into its
msgstr (msgstr[0] from the msgid, the other plural forms from msgid_plural); the
header, msgctxt, comments, references, flags, previous msgids and obsolete entries are
kept byte for byte, and so is every line outside the msgstr lines rewritten.

polib (the maintained .po parser) reads the catalogue, rejects a syntax error naming
its line, and says where each entry starts; its own writer re-wraps every entry, so
only each translated entry's msgstr lines are replaced in the source.

Entries already translated (a msgstr, and no fuzzy flag) are kept unless `retranslate`;
fuzzy ones are translated and stay fuzzy; with `review` every entry translated here is
flagged fuzzy, for a translator to check. printf and Python placeholders (`%s`,
`%(name)d`, `{count}`) and HTML tags are Marks: kept as written, placed by the
alignments.
"""

from __future__ import annotations

import re

import polib

from nmt.text.formats import DocumentError
from nmt.text.placement import Mark, Text, translate_units, with_slots

CODE = re.compile(
    r"%(?:\([^)\s]*\))?[-+ #0]*(?:\d+|\*)?(?:\.\d+)?[a-zA-Z%]|\{[\w.\[\]]*\}|<[^<>]*>"
)
MSGSTR = re.compile(r"^msgstr(\[\d+\])?\s")


def translate(translator, text: str, name: str, *, fmt: str, files, **options) -> str:
    try:
        catalogue = polib.pofile(text)
    except (OSError, ValueError) as err:  # polib: "Syntax error in po file (line N)..."
        raise DocumentError(f"{name}: {err}") from None
    wanted = [e for e in catalogue if e.msgid and not e.obsolete and _wanted(e, files)]
    sources = [
        s for e in wanted for s in ([e.msgid, e.msgid_plural] if e.msgid_plural else [e.msgid])
    ]
    units = [_unit(source) for source in sources]
    found = translate_units(translator, [[item for _, item in unit] for unit in units], **options)
    news = iter(_joined(unit, new) for unit, new in zip(units, found, strict=True))
    lines = text.splitlines(keepends=True)
    starts = sorted({e.linenum - 1 for e in catalogue})  # obsolete ones too
    ends = dict(zip(starts, [*starts[1:], len(lines)], strict=True))
    blocks = {}  # an entry's first line -> its lines rewritten
    for entry in wanted:
        forms = [next(news) for _ in range(2 if entry.msgid_plural else 1)]
        start = entry.linenum - 1
        blocks[start] = _rewritten(lines[start : ends[start]], entry, forms, files.review)
    out = lines[: starts[0]] if starts else lines
    for start in starts:
        out += blocks.get(start) or lines[start : ends[start]]
    return "".join(out)


def _wanted(entry, files) -> bool:
    translated = entry.msgstr or any(entry.msgstr_plural.values())
    return files.retranslate or not translated or "fuzzy" in entry.flags


def _unit(source: str) -> list[tuple[str | None, Text | Mark]]:
    pairs: list[tuple[str | None, Text | Mark]] = []
    pos = 0
    for code in CODE.finditer(source):
        pairs += [
            (None, Text(source[pos : code.start()])),
            (code.group(), Mark(code.group().startswith("</"))),
        ]
        pos = code.end()
    pairs.append((None, Text(source[pos:])))
    return with_slots([p for p in pairs if not (isinstance(p[1], Text) and not p[1].text)])


def _joined(unit: list, new: list[str] | None) -> str:
    if new is None:  # nothing to translate (no letters): the msgid itself
        return "".join(raw if raw is not None else item.text for raw, item in unit)
    strings = iter(new)
    return "".join(raw if raw is not None else next(strings) for raw, _ in unit)


def _rewritten(block: list[str], entry, forms: list[str], review: bool) -> list[str]:
    """An entry's lines with its msgstr lines replaced (and the fuzzy flag added)."""
    first = next(i for i, line in enumerate(block) if MSGSTR.match(line))
    last = first + 1
    while last < len(block) and (block[last].startswith('"') or MSGSTR.match(block[last])):
        last += 1
    newline = "\r\n" if block[first].endswith("\r\n") else "\n"
    if entry.msgid_plural:
        indexes = sorted(entry.msgstr_plural) or [0, 1]
        new = [_quoted(f"msgstr[{n}]", forms[min(n, 1)], newline) for n in indexes]
    else:
        new = [_quoted("msgstr", forms[0], newline)]
    tail = block[last:]
    block = block[:first] + [line for lines in new for line in lines] + tail
    if review and "fuzzy" not in entry.flags:
        block = _flagged(block, newline)
    return block


def _quoted(keyword: str, value: str, newline: str) -> list[str]:
    """gettext's form: one line, or "" and then a line per line of a multi-line value."""
    pieces = value.splitlines(keepends=True)
    if len(pieces) <= 1:
        return [f'{keyword} "{polib.escape(value)}"{newline}']
    return [f'{keyword} ""{newline}'] + [f'"{polib.escape(p)}"{newline}' for p in pieces]


def _flagged(block: list[str], newline: str) -> list[str]:
    for i, line in enumerate(block):
        if line.startswith("#,"):
            block[i] = line.rstrip("\r\n") + ", fuzzy" + newline
            return block
    at = next(
        i for i, line in enumerate(block) if not line.startswith("#") or line.startswith("#|")
    )
    return block[:at] + ["#, fuzzy" + newline] + block[at:]

"""Plain text: one output line per input line (`nmt.text.documents`), each line's
ending kept as it was (\\n, \\r\\n, none at the end)."""

from __future__ import annotations

from nmt.text.documents import translate_lines


def translate(translator, text: str, name: str, *, fmt: str, files, **options) -> str:
    lines = text.splitlines(keepends=True)
    bodies = [line.rstrip("\r\n") for line in lines]
    found = translate_lines(translator, bodies, **{**options, "nbest": 1})
    return "".join(
        hyps[0].text + line[len(body) :]
        for hyps, line, body in zip(found, lines, bodies, strict=True)
    )

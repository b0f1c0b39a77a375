"""HTML pages: `nmt.text.markup` (Python's own html.parser), as `--format html`."""

from __future__ import annotations

from nmt.text.markup import translate_html


def translate(translator, text: str, name: str, *, fmt: str, files, **options) -> str:
    return translate_html(translator, text, **options)

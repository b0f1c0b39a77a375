"""A fuzz of every text-bearing format: random runs (nested styles, entities and markup
characters, empty runs, spaces at their edges), made with the format's own library,
translated by a stand-in that upper-cases: the output opens with the format's library
and keeps the structure, every text node with letters changed and nothing else."""

from __future__ import annotations

import io
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.text.formats import translate_file
from tests.documents_made import MAKERS
from tests.documents_read import compare
from tests.stand_in import upper

# upper() keeps these characters' lengths, so every run's place is known exactly
WORD = st.text("abcxyzäöüABC019", min_size=1, max_size=6)
MARKUP = st.sampled_from(["&", "<", ">", '"', "'", "&amp;", "&lt;", ".", "!", "?", ",", "-"])
RUN_TEXT = st.lists(st.one_of(WORD, MARKUP, st.sampled_from([" ", " ", "  "])), max_size=6).map(
    "".join
)
RUNS = st.lists(
    st.tuples(RUN_TEXT, st.sampled_from(["", "", "b", "i", "bi"])), min_size=1, max_size=5
)
SPECS = st.lists(RUNS, min_size=1, max_size=3)


def opens(fmt: str, data: bytes) -> None:
    """The format's own library reads the file."""
    if fmt == "docx":
        import docx

        docx.Document(io.BytesIO(data))
    elif fmt == "pptx":
        import pptx

        pptx.Presentation(io.BytesIO(data))
    elif fmt in ("odt", "odp"):
        from odf.opendocument import load

        load(io.BytesIO(data))
    elif fmt == "epub":
        from ebooklib import epub

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            epub.read_epub(io.BytesIO(data))
    # the text formats are read by `compare` with theirs (srt, webvtt-py, polib, ...)


@pytest.mark.parametrize("fmt", [f for f in MAKERS if f != "text"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=SPECS)
def test_any_runs_come_back_in_a_file_that_opens_with_the_structure_kept(fmt, spec):
    source = MAKERS[fmt](spec)

    out = translate_file(upper(), source, fmt, f"fuzz.{fmt}")

    opens(fmt, out)
    compare(fmt, source, out, str.upper)

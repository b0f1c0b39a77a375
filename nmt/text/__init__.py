"""Text as people have it: whole lines (sentences, windows, nothing invented), HTML pages,
and documents of every format in `formats/` (Word, PowerPoint, OpenDocument, EPUB,
subtitles, gettext, XLIFF, Markdown), their inline formatting placed back by the
alignments (`placement`)."""

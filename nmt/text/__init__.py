"""Text as people have it: whole lines (sentences, windows, nothing invented) and
HTML pages (markup kept, inline tags placed back by the alignments)."""

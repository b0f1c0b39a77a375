"""What `nmt serve` admits, and how long it waits: every bound of the server in one place.

`nmt serve`'s flags set these (nmt/cli.py); the door (`nmt.serve.door`) and the guard
(`nmt.serve.guard`) enforce the ones on a request's size and time, the batcher the ones on
its work, the API handlers those on texts. Times are in seconds unless the name says ms.
"""

from __future__ import annotations

from dataclasses import dataclass

# A line longer than this counts as one batch line per this many characters: a line of
# many sentences is as much work as as many lines (the Multi30k sentences average 65).
LINE_CHARS = 150


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # a body over it: 413, counted while it arrives
    max_file_bytes: int = 10 << 20  # the same for /translate_file's upload, form and all
    file_keep_seconds: float = 600.0  # how long a translated file can be downloaded
    body_timeout: float = 30.0  # a body not all there this long after the headers: 408
    shutdown_grace: float = 10.0  # after SIGTERM: to answer what was accepted
    char_limit: int = 10_000  # characters in one text (LibreTranslate's char_limit); 400
    batch_limit: int = 10_000  # texts in one request, items in any JSON array; 400
    max_depth: int = 16  # nesting of a JSON body; deeper: 400 before it is parsed
    max_pending: int = 256  # requests waiting or being translated; past it: 503
    max_inspect_chars: int = 1_000  # the one sentence of /v1/inspect
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    batch_lines: int = 32  # lines in one batch (and so in a request's piece) at most
    req_limit: int = 0  # requests a minute per client address without an API key; 0: none

    def body_limit(self, path: str) -> int:
        """The most bytes a body sent to `path` may have."""
        return self.max_file_bytes if path == "/translate_file" else self.max_body_bytes


def line_weight(line) -> int:
    """How many of `Limits.batch_lines` a line (a text, or a `documents.Line`) uses: one
    per `LINE_CHARS` characters."""
    return max(1, -(-len(getattr(line, "text", line)) // LINE_CHARS))

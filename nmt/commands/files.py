"""What the commands share about files: the files a command reads (which its outputs
may never be), inputs checked before a model is loaded, and progress on a terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.errors import NmtError

# imports of data, training, tqdm are in the functions: `nmt --help` stays instant


class UsageError(NmtError):
    """Options that cannot apply together."""


# the parser's arguments that name files or run folders a command reads
READ_ARGUMENTS = (
    "config", "input", "hyp", "ref", "src", "model", "checkpoints", "run", "glossary", "avoid"
)  # fmt: skip


def files_read(args: argparse.Namespace) -> list[Path]:
    """Every file the command reads: its READ_ARGUMENTS, and with each the run it
    belongs to, whole (a run folder, or a file in one such as RUN/best.pt under any
    name: every file training wrote there, `run_files`), so that no output of the
    command can be part of a run it loads. An output may be none of them
    (`nmt.outputs.check_output` compares the files themselves, through symbolic and
    hard links); a command adds what it finds to read on its own (a run's test split)."""
    from nmt.training.run_dir import is_run, run_files

    named = []
    for dest in READ_ARGUMENTS:
        value = getattr(args, dest, None)
        named += value if isinstance(value, list) else [value] if value else []
    found = []
    for path in (Path(p) for p in named if p != "-"):
        run = path if path.is_dir() else path.resolve().parent
        found += [path] if path.exists() and not path.is_dir() else []
        found += run_files(run) if is_run(run) else []
    return found


def existing_file(path: str, role: str = "") -> Path:
    """`path`, checked before any model is loaded for it: a file, or a pipe or device
    (`<(cmd)`, /dev/stdin), not a directory; `role` starts the message."""
    from nmt.data import DataError

    if not Path(path).exists():
        raise DataError(f"{role}{path} does not exist")
    if Path(path).is_dir():
        raise DataError(f"{role}{path} is a directory, not a file")
    return Path(path)


def read_nonempty(path: str, role: str = "") -> list[str]:
    """The lines of a file that something is computed from (scores): empty, it is
    refused; translating takes an empty input (no lines in, none out)."""
    from nmt.data import DataError, read_lines

    lines = read_lines(existing_file(path, role))
    if not lines:
        raise DataError(f"{role}{path} is empty: nothing to score")
    return lines


def progress_bar(source: str):
    """tqdm on a terminal: lines done and the rate, and where the input is a regular
    file (stdin redirected from one too) the total and the time left; a pipe has no
    total, as counting its lines would read it."""
    from tqdm import tqdm

    from nmt.data import count_lines

    if sys.stderr is None or not sys.stderr.isatty():
        return tqdm(disable=True)
    return tqdm(total=count_lines(source), unit=" lines", file=sys.stderr, dynamic_ncols=True)

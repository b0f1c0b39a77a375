"""Inputs and outputs that are not plain files: pipes and process substitution in,
stdin closed, stdout closed early or full; gzip by its contents; the progress bar on a
terminal; `nmt --version`."""

from __future__ import annotations

import fcntl
import gzip
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

import nmt
from nmt import cli
from nmt.data import count_lines, read_lines
from tests.conftest import make_pairs

ROOT = Path(__file__).resolve().parents[1]
NMT = f"{sys.executable} -m nmt"


def shell(command: str, **options) -> subprocess.CompletedProcess:
    """`command` in bash (for `<(...)`, `<&-`, pipes), with this checkout's nmt."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300, **options
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("streams") / "src.de"
    path.write_text("".join(s + "\n" for s, _ in make_pairs(30, seed=31)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def expected(trained_run, source) -> str:
    out = source.with_name("expected.en")
    cli.main(["-q", "translate", str(trained_run), "-i", str(source), "-o", str(out)])
    return out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "how",
    [
        "-i <(cat {src})",  # process substitution: a pipe under /dev/fd
        "-i /dev/stdin < {src}",
        "-i <(gzip -c {src})",  # compressed, and a pipe: gzip is told by its first bytes
        "< {src}",
        "-i - < {src}",
    ],
)
def test_pipes_and_stdin_read_like_the_file(trained_run, source, expected, how):
    result = shell(f"{NMT} -q translate {trained_run} " + how.format(src=source))

    assert result.returncode == 0, result.stderr
    assert result.stdout == expected and result.stderr == ""


def test_a_closed_stdin_is_one_line(trained_run):
    result = shell(f"{NMT} -q translate {trained_run} <&-")

    assert result.returncode == 2
    assert result.stderr == "nmt: error: no input: stdin is closed (give a file with -i)\n"


def test_a_reader_that_stops_early_ends_the_command_quietly(trained_run, tmp_path):
    many = tmp_path / "many.de"
    many.write_text("Der hund läuft.\n" * 3000, encoding="utf-8")

    result = shell(
        f"{NMT} -q translate {trained_run} -i {many} --scores | head -1; "
        "echo status=${PIPESTATUS[0]}"
    )

    assert result.stdout.count("\n") == 2 and "status=141" in result.stdout
    assert result.stderr == ""


def test_a_full_stdout_is_named(trained_run, source):
    result = shell(f"{NMT} -q translate {trained_run} -i {source} > /dev/full")

    assert result.returncode == 2
    assert result.stderr == "nmt: error: cannot write <stdout>: No space left on device\n"


def test_gzip_is_read_by_its_contents_and_a_corrupt_one_is_named(tmp_path):
    plain, packed = tmp_path / "a.txt", tmp_path / "a.txt.gz"
    plain.write_text("eins\nzwei\n")
    packed.write_bytes(gzip.compress(b"eins\nzwei\n"))
    misnamed = tmp_path / "b.txt"  # gzip without the suffix: a pipe has none either
    misnamed.write_bytes(packed.read_bytes())
    corrupt = tmp_path / "c.gz"
    corrupt.write_bytes(gzip.compress(b"eins\n" * 1000)[:-40] + b"\x00" * 40)

    assert read_lines(plain) == read_lines(packed) == read_lines(misnamed) == ["eins", "zwei"]
    with pytest.raises(ValueError, match=f"^cannot read {corrupt}.*: corrupt or cut-short gzip"):
        read_lines(corrupt)


def test_lines_are_counted_for_regular_files_only(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("a\nb\nc")  # the last line without its newline counts
    packed = tmp_path / "a.gz"
    packed.write_bytes(gzip.compress(b"a\nb\n"))
    reader, writer = os.pipe()

    assert (count_lines(path), count_lines(packed), count_lines(f"/dev/fd/{reader}")) == (
        3,
        2,
        None,
    )
    with open(path) as stdin:  # stdin redirected from a file: counted, not consumed
        monkeypatch.setattr(sys, "stdin", stdin)
        assert count_lines("-") == 3 and read_lines("-") == ["a", "b", "c"]
    os.close(reader), os.close(writer)


def terminal_stderr(command: str) -> str:
    """What `command` writes to stderr when stderr is a terminal (a pty)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    process = subprocess.Popen(
        ["bash", "-c", command], env=env, stderr=child, stdout=subprocess.DEVNULL
    )
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child side closed
            break
        if not chunk:
            break
        seen += chunk
    process.wait(timeout=300)
    os.close(main)
    return seen.decode(errors="replace")


def test_a_terminal_gets_a_progress_bar_with_the_total_for_a_file_and_a_rate_for_a_pipe(
    trained_run, source
):
    lines = len(source.read_text().splitlines())

    from_file = terminal_stderr(f"{NMT} -q translate {trained_run} -i {source}")
    from_pipe = terminal_stderr(f"{NMT} -q translate {trained_run} -i <(cat {source})")

    assert f"{lines}/{lines}" in from_file and "<00:00" in from_file  # total, and time left
    assert f"{lines} lines" in from_pipe and f"/{lines}" not in from_pipe


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])

    assert exit_.value.code == 0 and capsys.readouterr().out == f"nmt {nmt.__version__}\n"

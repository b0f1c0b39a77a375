"""Parallel text on Hugging Face `datasets`: where a split's pairs come from.

A split comes from the Hub, line-aligned files (`PREFIX.de` + `PREFIX.en`, plain or .gz)
or one .tsv / .jsonl file, and becomes a `datasets.Dataset` with `src` and `tgt` text
columns, or a stream of pairs. Tokenizing and batching them is `nmt.corpus`'s.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import logging
import os
import stat
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import datasets

from nmt.config import DataConfig
from nmt.errors import NmtError

log = logging.getLogger(__name__)
datasets.disable_progress_bars()


class DataError(NmtError):
    """Unreadable or inconsistent input data; the message names the file and line."""


def load_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """The pairs of one split as a Dataset with `src` and `tgt` columns."""
    if cfg.hub:
        ds = _hub_split(cfg, split)
        pick, procs = _hub_columns(cfg, split, ds.column_names), map_procs(cfg, ds)
        return ds.map(pick, batched=True, remove_columns=ds.column_names, num_proc=procs)
    pairs = list(stream_pairs(cfg, split))
    text = datasets.Value("string")
    columns = {"src": [s for s, _ in pairs], "tgt": [t for _, t in pairs]}
    return datasets.Dataset.from_dict(columns, features=datasets.Features(src=text, tgt=text))


def stream_pairs(cfg: DataConfig, split: str) -> Iterator[tuple[str, str]]:
    """The (src, tgt) pairs of one split, one at a time: memory stays flat for any size.

    The Hub is read as a streaming `datasets.IterableDataset`; local files line by line.
    """
    if cfg.hub:
        ds = _hub_split(cfg, split, streaming=True)
        columns = ds.column_names or list(next(iter(ds)))  # unknown until read for some sources
        pick = _hub_columns(cfg, split, columns)
        for rows in ds.iter(batch_size=1000):
            picked = pick(rows)
            yield from zip(picked["src"], picked["tgt"], strict=True)
        return
    files = split_files(cfg, split)
    if len(files) == 1:
        if ".tsv" in files[0].suffixes:
            yield from _tsv_pairs(files[0])
        else:
            yield from _jsonl_pairs(files[0], cfg)
        return
    src_path, tgt_path = files
    src_lines, tgt_lines = iter_lines(src_path), iter_lines(tgt_path)
    count = 0
    for src, tgt in itertools.zip_longest(src_lines, tgt_lines):
        if src is None or tgt is None:  # one file ended: count the rest of the other
            longer = tgt_lines if src is None else src_lines
            counts = (count, count + 1 + sum(1 for _ in longer))
            if src is not None:
                counts = counts[::-1]
            raise DataError(
                f"{src_path} has {counts[0]} lines but {tgt_path} has {counts[1]}: "
                "parallel files must be line-aligned"
            )
        count += 1
        yield src, tgt


def tokenizer_text(
    cfg: DataConfig, raw: datasets.Dataset | None = None
) -> tuple[list[str], list[str]]:
    """The source and target text SentencePiece learns from: the training split's
    (`raw`, if already loaded), or with `data.streaming` its first `data.spm_sample` pairs."""
    if raw is not None:
        return raw["src"][:], raw["tgt"][:]
    if not cfg.streaming:
        raw = load_split(cfg, cfg.train)
        return raw["src"][:], raw["tgt"][:]
    pairs = list(itertools.islice(stream_pairs(cfg, cfg.train), cfg.spm_sample))
    return [s for s, _ in pairs], [t for _, t in pairs]


def _hub_split(cfg: DataConfig, split: str, *, streaming: bool = False):
    """One split of `data.hub` through `datasets.load_dataset`."""
    with hub_errors(cfg, split):
        return datasets.load_dataset(
            cfg.hub, cfg.hub_config or None, split=split, streaming=streaming
        )


@contextlib.contextmanager
def hub_errors(cfg: DataConfig, split: str) -> Iterator[None]:
    """`datasets`' errors for a dataset or split it cannot find or read, as one-line
    DataErrors naming `data.hub` and the split."""
    try:
        yield
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        lines = str(err).strip().splitlines()
        message = lines[0] if lines else type(err).__name__
        raise DataError(f"data.hub={cfg.hub} split {split!r}: {message}") from None


def _hub_columns(cfg: DataConfig, split: str, columns: list[str]):
    """A batched row mapper from a Hub dataset's layout to `src` and `tgt` columns."""
    if "translation" in columns:  # {"translation": {"de": ..., "en": ...}}
        sides = {"src": cfg.src_lang, "tgt": cfg.tgt_lang}

        def pick(rows):
            return {
                col: [pair[lang] for pair in rows["translation"]] for col, lang in sides.items()
            }

        return pick
    src_col, tgt_col = cfg.src_column or cfg.src_lang, cfg.tgt_column or cfg.tgt_lang
    for col in (src_col, tgt_col):
        if col not in columns:
            raise DataError(f"{cfg.hub} split {split!r} has no column {col!r}: {columns}")

    def pick(rows):
        return {"src": rows[src_col], "tgt": rows[tgt_col]}

    return pick


def _existing(path: Path) -> Path:
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gz
    raise DataError(f"data file {path} (or {gz.name}) does not exist")


STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"


def read_lines(path: Path | str, errors: str = "strict") -> list[str]:
    """Lines of a UTF-8 file, plain or gzipped, without line endings (`iter_lines`)."""
    return list(iter_lines(path, errors))


def iter_lines(path: Path | str, errors: str = "strict") -> Iterator[str]:
    """`read_lines`, one line at a time: memory stays flat for any size. `path` may be a
    pipe (`<(cmd)`, /dev/stdin) or `-` (stdin); gzip is recognised by its contents, so a
    compressed pipe reads too. Whatever fails is a `DataError` naming the input (and
    the line it got to)."""
    yield from decode_lines(_raw_lines(path), _name(path), errors)


def read_bytes(path: Path | str) -> bytes:
    """A whole input (`iter_lines`' kinds), gunzipped, line endings and all."""
    return b"".join(_raw_lines(path))


def count_lines(path: Path | str) -> int | None:
    """The lines of a regular file (or of stdin redirected from one), counted without
    reading it as input; None for a pipe or a terminal (counting would consume it)."""
    try:
        if str(path) != STDIN:
            if not Path(path).is_file():
                return None
            with open(path, "rb") as raw:
                with (
                    gzip.GzipFile(fileobj=raw)
                    if _gzipped(raw)
                    else contextlib.nullcontext(raw) as f
                ):
                    return _count(iter(lambda: f.read(1 << 20), b""))
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
        if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        start = os.lseek(fd, 0, os.SEEK_CUR)  # pread: stdin's own position stays put
        chunks = (os.pread(fd, 1 << 20, at) for at in itertools.count(start, 1 << 20))
        return _count(itertools.takewhile(bool, chunks))
    except (OSError, EOFError, zlib.error, ValueError):
        return None  # it will fail as input, with its message


def _count(chunks: Iterable[bytes]) -> int:
    lines, last = 0, b"\n"
    for chunk in chunks:
        lines, last = lines + chunk.count(b"\n"), chunk[-1:]
    return lines + (last != b"\n")  # a last line without its newline counts too


def _gzipped(raw: IO[bytes]) -> bool:
    """Whether a stream starts as gzip does: by `peek`, as a pipe cannot seek back (a
    stream without it, a replaced sys.stdin, is taken as plain)."""
    peek = getattr(raw, "peek", None)
    return peek is not None and peek(2)[:2] == GZIP_MAGIC


def _name(path: Path | str) -> str:
    return "<stdin>" if str(path) == STDIN else str(path)


def _raw_lines(path: Path | str) -> Iterator[bytes]:
    """The input's lines as bytes, endings kept; a failure to read it is a DataError."""
    count = 0
    try:
        with _open_binary(path) as raw:
            with gzip.GzipFile(fileobj=raw) if _gzipped(raw) else contextlib.nullcontext(raw) as f:
                for line in f:
                    count += 1
                    yield line
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise DataError(f"{_name(path)} does not exist") from None
        where = f" after line {count}" if count else ""
        compressed = isinstance(err, (EOFError, zlib.error, gzip.BadGzipFile))
        reason = "corrupt or cut-short gzip data" if compressed else getattr(err, "strerror", None)
        raise DataError(f"cannot read {_name(path)}{where}: {reason or err}") from None


@contextlib.contextmanager
def _open_binary(path: Path | str) -> Iterator[IO[bytes]]:
    if str(path) != STDIN:
        with open(path, "rb") as f:
            yield f
        return
    if sys.stdin is None:  # started with stdin closed: `nmt translate RUN <&-`
        raise DataError("no input: stdin is closed (give a file with -i)")
    yield sys.stdin.buffer


def decode_lines(raw: Iterable[bytes], name: str, errors: str = "strict") -> Iterator[str]:
    """UTF-8 lines without their line endings; invalid UTF-8 raises a DataError naming
    `name` and the line, unless `errors="replace"`."""
    for number, line in enumerate(raw, 1):
        try:
            yield line.decode("utf-8", errors=errors).rstrip("\r\n")
        except UnicodeDecodeError:
            raise DataError(f"{name} line {number}: not valid UTF-8") from None


def _tsv_pairs(path: Path) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(iter_lines(path), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path} line {number}: expected 2 tab-separated fields, got {len(fields)}"
            )
        yield fields[0], fields[1]


def _jsonl_pairs(path: Path, cfg: DataConfig) -> Iterator[tuple[str, str]]:
    src_key, tgt_key = cfg.src_column or cfg.src_lang, cfg.tgt_column or cfg.tgt_lang
    for number, line in enumerate(iter_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row = row.get("translation", row)
            src, tgt = row[src_key], row[tgt_key]
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
            raise DataError(
                f"{path} line {number}: expected a JSON object with {src_key!r} and {tgt_key!r} "
                "(or a 'translation' object holding them)"
            ) from None
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise DataError(f"{path} line {number}: {src_key!r} and {tgt_key!r} must be strings")
        yield src, tgt


def map_procs(cfg: DataConfig, ds: datasets.Dataset) -> int | None:
    # worker processes only pay off on large splits
    return cfg.num_proc if cfg.num_proc > 1 and len(ds) > 50_000 else None


def split_files(cfg: DataConfig, split: str) -> list[Path]:
    """A local split's files: one .tsv / .jsonl (maybe .gz), or PREFIX.src + PREFIX.tgt."""
    path = Path(split)
    if path.suffix in {".tsv", ".jsonl"} or path.name.endswith((".tsv.gz", ".jsonl.gz")):
        return [_existing(path)]
    return [_existing(Path(f"{split}.{lang}")) for lang in (cfg.src_lang, cfg.tgt_lang)]

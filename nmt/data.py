"""Parallel data on Hugging Face `datasets`: loading, cleaning, tokenizing, batching.

A split comes from the Hub, from line-aligned files (`PREFIX.de` + `PREFIX.en`,
plain or .gz) or from one .tsv / .jsonl file, and always becomes a
`datasets.Dataset` with `src` and `tgt` text columns. Pairs are tokenized once
with `map(batched=True)`; batches group similar lengths under a token budget and
are a pure function of (seed, epoch), so a run can resume mid-epoch.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from torch import Tensor

from nmt.config import DataConfig
from nmt.tokenizer import BOS, EOS, PAD, Tokenizer

log = logging.getLogger(__name__)
datasets.disable_progress_bars()


class DataError(ValueError):
    """Unreadable or inconsistent input data; the message names the file and line."""


def load_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """The pairs of one split as a Dataset with `src` and `tgt` columns."""
    if cfg.hub:
        ds = _hub_split(cfg, split)
        return ds.map(
            _hub_columns(cfg, split, ds.column_names),
            batched=True,
            remove_columns=ds.column_names,
            num_proc=_procs(cfg, ds),
        )
    pairs = list(stream_pairs(cfg, split))
    return datasets.Dataset.from_dict(
        {"src": [s for s, _ in pairs], "tgt": [t for _, t in pairs]},
        features=datasets.Features(
            {"src": datasets.Value("string"), "tgt": datasets.Value("string")}
        ),
    )


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
    files = _split_files(cfg, split)
    if len(files) == 1:
        reader = _tsv_pairs if ".tsv" in files[0].suffixes else _jsonl_pairs
        yield from reader(files[0], cfg)
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


def _hub_split(cfg: DataConfig, split: str, *, streaming: bool = False):
    """One split of `data.hub` through `datasets.load_dataset`."""
    with _hub_errors(cfg, split):
        return datasets.load_dataset(
            cfg.hub, cfg.hub_config or None, split=split, streaming=streaming
        )


@contextlib.contextmanager
def _hub_errors(cfg: DataConfig, split: str) -> Iterator[None]:
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
        src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang

        def pick(rows):
            return {
                "src": [pair[src_lang] for pair in rows["translation"]],
                "tgt": [pair[tgt_lang] for pair in rows["translation"]],
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


def read_lines(path: Path, errors: str = "strict") -> list[str]:
    """Lines of a plain or gzipped UTF-8 file, without line endings.

    Invalid UTF-8 raises a DataError naming the file and line unless
    `errors="replace"`.
    """
    return list(iter_lines(path, errors))


def iter_lines(path: Path, errors: str = "strict") -> Iterator[str]:
    """`read_lines`, one line at a time: memory stays flat for any file size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield raw.decode("utf-8", errors=errors).rstrip("\r\n")
                except UnicodeDecodeError:
                    raise DataError(f"{path} line {number}: not valid UTF-8") from None
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def _tsv_pairs(path: Path, cfg: DataConfig) -> Iterator[tuple[str, str]]:
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


def _procs(cfg: DataConfig, ds: datasets.Dataset) -> int | None:
    # worker processes only pay off on large splits
    return cfg.num_proc if cfg.num_proc > 1 and len(ds) > 50_000 else None


def tokenize(
    ds: datasets.Dataset, src_tok: Tokenizer, tgt_tok: Tokenizer, cfg: DataConfig
) -> datasets.Dataset:
    """Adds `src_ids` (pieces + EOS) and `tgt_ids` (BOS + pieces + EOS)."""

    def encode(rows):
        return {
            "src_ids": [ids + [EOS] for ids in src_tok.encode(rows["src"])],
            "tgt_ids": [[BOS] + ids + [EOS] for ids in tgt_tok.encode(rows["tgt"])],
        }

    return ds.map(encode, batched=True, batch_size=2000, num_proc=_procs(cfg, ds))


def clean(ds: datasets.Dataset, cfg: DataConfig) -> tuple[datasets.Dataset, dict[str, int]]:
    """Drops empty, over-long and badly length-mismatched tokenized training pairs.

    Returns the kept pairs and the count dropped for each reason.
    """
    counts = {"empty": 0, "too_long": 0, "bad_ratio": 0, "kept": 0}
    keep = []
    for i, (src, tgt) in enumerate(zip(ds["src_ids"][:], ds["tgt_ids"][:], strict=True)):
        reason = _rejected(src, tgt, cfg)
        counts[reason] += 1
        if reason == "kept":
            keep.append(i)
    return (ds if len(keep) == len(ds) else ds.select(keep)), counts


def _rejected(src_ids: list[int], tgt_ids: list[int], cfg: DataConfig) -> str:
    """Why a tokenized training pair is dropped, or "kept"."""
    s, t = len(src_ids) - 1, len(tgt_ids) - 2  # without EOS; without BOS and EOS
    if s == 0 or t == 0:
        return "empty"
    if s > cfg.max_len or t > cfg.max_len:
        return "too_long"
    if max(s, t) / min(s, t) > cfg.max_ratio:
        return "bad_ratio"
    return "kept"


def training_split(
    cfg: DataConfig,
    tokenizers: tuple[Tokenizer, Tokenizer],
    raw: datasets.Dataset | None = None,
) -> tuple[datasets.Dataset, dict[str, int]]:
    """The cleaned, tokenized training split (`src_ids`, `tgt_ids`) and the cleaning counts.

    Kept as Arrow under `data.cache_dir`, keyed by the source files (a Hub
    dataset's revision, as `datasets` hashes it), the cleaning settings and the
    tokenizers: a later run or another rank with the same data
    and SentencePiece models memory-maps it instead of tokenizing again. `raw`:
    the split's text if already loaded.
    """
    cache = _cache_path(cfg, tokenizers)
    if cache is not None and (cache / "counts.json").is_file():
        log.info("tokenized training split from %s", cache)
        counts = json.loads((cache / "counts.json").read_text())
        return datasets.load_from_disk(str(cache)), counts
    raw = load_split(cfg, cfg.train) if raw is None else raw
    ds, counts = clean(tokenize(raw, *tokenizers, cfg), cfg)
    ds = ds.select_columns(["src_ids", "tgt_ids"])
    if cache is not None:
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        try:
            ds.save_to_disk(str(tmp))
            (tmp / "counts.json").write_text(json.dumps(counts))
            tmp.rename(cache)  # whole or absent, even if two runs build it at once
        except OSError as err:
            if (cache / "counts.json").is_file():  # another run built the same cache first
                log.info("tokenized training split cached by another run in %s", cache)
            else:
                log.warning("cannot cache the tokenized training split in %s: %s", cache, err)
            shutil.rmtree(tmp, ignore_errors=True)
    return ds, counts


def _cache_path(cfg: DataConfig, tokenizers: tuple[Tokenizer, Tokenizer]) -> Path | None:
    if not cfg.cache_dir:
        return None
    key = hashlib.sha256()
    settings = (cfg.hub, cfg.hub_config, cfg.train, cfg.src_lang, cfg.tgt_lang, cfg.src_column)
    settings += (cfg.tgt_column, cfg.max_len, cfg.max_ratio)
    key.update(repr(settings).encode())
    for tok in tokenizers:
        key.update(hashlib.sha256(tok.model_bytes).digest())
    if cfg.hub:  # the dataset's version: an updated dataset is a new key
        with _hub_errors(cfg, cfg.train):
            builder = datasets.load_dataset_builder(cfg.hub, cfg.hub_config or None)
        key.update(builder.hash.encode())
    else:  # local files: their identity (a changed file is a new key)
        for path in _split_files(cfg, cfg.train):
            stat = path.stat()
            key.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return Path(cfg.cache_dir).expanduser() / f"tokenized-{key.hexdigest()[:24]}"


def _split_files(cfg: DataConfig, split: str) -> list[Path]:
    """A local split's files: one .tsv / .jsonl (maybe .gz), or PREFIX.src + PREFIX.tgt."""
    path = Path(split)
    if path.suffix in {".tsv", ".jsonl"} or path.name.endswith((".tsv.gz", ".jsonl.gz")):
        return [_existing(path)]
    return [_existing(Path(f"{split}.{lang}")) for lang in (cfg.src_lang, cfg.tgt_lang)]


@dataclass(frozen=True)
class Batches:
    """Token-budget batches over fixed sequence lengths; a pure function of (seed, epoch)."""

    src_lengths: list[int]
    tgt_lengths: list[int]
    max_tokens: int
    seed: int

    def epoch(self, epoch: int) -> list[list[int]]:
        """The batches (lists of example indices) of one epoch, in training order.

        Examples are shuffled, then stably sorted by length so equal lengths mix
        differently each epoch; a batch holds similar lengths and its padded
        size (rows * longest side) stays within `max_tokens`.
        """
        rng = random.Random(epoch_seed(self.seed, epoch))
        order = list(range(len(self.src_lengths)))
        rng.shuffle(order)
        return budget_batches(order, self.src_lengths, self.tgt_lengths, self.max_tokens, rng)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def budget_batches(
    order: list[int], src_lengths, tgt_lengths, max_tokens: int, rng: random.Random
) -> list[list[int]]:
    """Indices in `order`, stably sorted by length and cut into batches whose padded
    size (rows * longest side) stays within `max_tokens`; the batches shuffled."""
    order = sorted(order, key=lambda i: (tgt_lengths[i], src_lengths[i]))
    batches, batch, longest = [], [], 0
    for i in order:
        size = max(src_lengths[i], tgt_lengths[i])
        if batch and max(longest, size) * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, size)
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


IdBatch = tuple[list[list[int]], list[list[int]]]  # source ids and target ids of a batch


class InMemoryCorpus:
    """Tokenized training pairs held in memory; `Batches` decides each epoch's order."""

    def __init__(self, ds: datasets.Dataset, cfg: DataConfig, seed: int):
        self.src_ids, self.tgt_ids = ds["src_ids"][:], ds["tgt_ids"][:]
        self.index = Batches(
            [len(x) for x in self.src_ids], [len(x) for x in self.tgt_ids], cfg.max_tokens, seed
        )

    def batches(self, epoch: int, start: int = 0) -> Iterator[IdBatch]:
        """Epoch `epoch`'s batches from the `start`-th on."""
        for batch in self.index.epoch(epoch)[start:]:
            yield [self.src_ids[i] for i in batch], [self.tgt_ids[i] for i in batch]


class StreamingCorpus:
    """Training pairs read as a stream, tokenized and cleaned on the fly (`data.streaming`).

    Memory is bounded by two buffers whatever the corpus size: a shuffle buffer
    of `data.shuffle_buffer` pairs, and a pool of `data.sort_pool` pairs sorted
    by length and cut into token-budget batches. An epoch is a pure function of
    (seed, epoch), so resuming at batch k replays the stream and skips k batches.
    """

    def __init__(self, pairs, tokenizers: tuple[Tokenizer, Tokenizer], cfg: DataConfig, seed: int):
        """`pairs`: a callable returning a fresh iterator of (src, tgt) text pairs."""
        self.pairs, self.tokenizers, self.cfg, self.seed = pairs, tokenizers, cfg, seed
        self.counts = dict.fromkeys(("empty", "too_long", "bad_ratio", "kept"), 0)

    def batches(self, epoch: int, start: int = 0) -> Iterator[IdBatch]:
        """Epoch `epoch`'s batches from the `start`-th on (the ones before are replayed)."""
        return itertools.islice(self._epoch(epoch), start, None)

    def _epoch(self, epoch: int) -> Iterator[IdBatch]:
        rng = random.Random(epoch_seed(self.seed, epoch))
        self.counts = dict.fromkeys(self.counts, 0)
        pairs = self._tokenized(shuffled(self.pairs(), self.cfg.shuffle_buffer, rng))
        while pool := list(itertools.islice(pairs, self.cfg.sort_pool)):
            yield from self._cut(pool, rng)

    def _tokenized(self, pairs: Iterator[tuple[str, str]], chunk: int = 1000):
        src_tok, tgt_tok = self.tokenizers
        while rows := list(itertools.islice(pairs, chunk)):
            src_ids = src_tok.encode([s for s, _ in rows])
            tgt_ids = tgt_tok.encode([t for _, t in rows])
            for src, tgt in zip(src_ids, tgt_ids, strict=True):
                src, tgt = src + [EOS], [BOS] + tgt + [EOS]
                reason = _rejected(src, tgt, self.cfg)
                self.counts[reason] += 1
                if reason == "kept":
                    yield src, tgt

    def _cut(self, pool, rng: random.Random) -> list[IdBatch]:
        src_lengths, tgt_lengths = [len(s) for s, _ in pool], [len(t) for _, t in pool]
        order = list(range(len(pool)))
        cut = budget_batches(order, src_lengths, tgt_lengths, self.cfg.max_tokens, rng)
        return [([pool[i][0] for i in b], [pool[i][1] for i in b]) for b in cut]


def shuffled(items: Iterator, buffer_size: int, rng: random.Random) -> Iterator:
    """Items in a random order drawn from a buffer of `buffer_size`: a bounded-memory
    approximation of a full shuffle (exact when the buffer holds everything)."""
    buffer = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = rng.randrange(buffer_size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


def sorted_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Inference batches: indices sorted longest first, `rows * longest <= max_tokens`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, batch = [], []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and longest * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + [batch] if batch else batches


def pad_batch(sequences: list[list[int]], multiple: int = 1) -> tuple[Tensor, Tensor]:
    """Right-pads id lists -> ids (N, longest rounded up to `multiple`) and lengths (N,)."""
    lengths = torch.tensor([len(s) for s in sequences])
    width = -(-int(lengths.max()) // multiple) * multiple
    ids = torch.full((len(sequences), width), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids, lengths


def collate(src_ids: list[list[int]], tgt_ids: list[list[int]]) -> dict[str, Tensor]:
    """-> src (N, S), src_len (N,), tgt_in (N, T) from BOS, tgt_out (N, T) up to EOS."""
    src, src_len = pad_batch(src_ids)
    tgt, _ = pad_batch(tgt_ids)
    return {"src": src, "src_len": src_len, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}

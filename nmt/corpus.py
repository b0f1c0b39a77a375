"""Tokenized corpora and their batches: tokenizing once, cleaning, token-budget batching.

Training pairs are tokenized once with `map(batched=True)` (and cached), or on the fly
from a stream; one batcher (`token_batches`) cuts them, and translation's sentences, into
batches of similar lengths under a token budget. Training batches are a pure function
of (seed, epoch), so a run can resume mid-epoch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import datasets
import torch
from torch import Tensor

from nmt.config import DataConfig
from nmt.data import DataError, hub_errors, load_split, map_procs, split_files, stream_pairs
from nmt.plan import LENGTH_STEP, ROWS_STEP, bucket
from nmt.tokenizer import BOS, EOS, PAD, Tokenizer

log = logging.getLogger(__name__)


def tokenize(
    ds: datasets.Dataset, src_tok: Tokenizer, tgt_tok: Tokenizer, cfg: DataConfig
) -> datasets.Dataset:
    """Adds `src_ids` (pieces + EOS) and `tgt_ids` (BOS + pieces + EOS)."""

    def encode(rows):
        return {
            "src_ids": [ids + [EOS] for ids in src_tok.encode(rows["src"])],
            "tgt_ids": [[BOS] + ids + [EOS] for ids in tgt_tok.encode(rows["tgt"])],
        }

    return ds.map(encode, batched=True, batch_size=2000, num_proc=map_procs(cfg, ds))


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

    Kept as Arrow under `data.cache_dir`, keyed by the source files (a Hub dataset's
    revision), the cleaning settings and the tokenizers: a later run or another rank
    memory-maps it instead of tokenizing again. `raw`: the split's text if loaded."""
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
        with hub_errors(cfg, cfg.train):
            builder = datasets.load_dataset_builder(cfg.hub, cfg.hub_config or None)
        key.update(builder.hash.encode())
    else:  # local files: their identity (a changed file is a new key)
        for path in split_files(cfg, cfg.train):
            stat = path.stat()
            key.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return Path(cfg.cache_dir).expanduser() / f"tokenized-{key.hexdigest()[:24]}"


def epoch_batches(
    src_lengths: list[int], tgt_lengths: list[int], max_tokens: int, seed: int, epoch: int
) -> list[list[int]]:
    """One epoch's batches (lists of example indices) in training order, a pure function
    of (seed, epoch): shuffled, then stably sorted by length, so that equal lengths mix
    differently each epoch (`budget_batches`)."""
    rng = random.Random(epoch_seed(seed, epoch))
    order = list(range(len(src_lengths)))
    rng.shuffle(order)
    return budget_batches(order, src_lengths, tgt_lengths, max_tokens, rng)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def budget_batches(
    order: list[int], src_lengths, tgt_lengths, max_tokens: int, rng: random.Random
) -> list[list[int]]:
    """Training batches of the indices in `order`: stably sorted by length, cut by
    `token_batches` on the longer side, the batches shuffled."""
    order = sorted(order, key=lambda i: (tgt_lengths[i], src_lengths[i]))
    sizes = [max(s, t) for s, t in zip(src_lengths, tgt_lengths, strict=True)]
    batches = token_batches(order, sizes, max_tokens)
    rng.shuffle(batches)
    return batches


def inference_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Translation batches: the indices longest first, cut by `token_batches`."""
    longest_first = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return token_batches(longest_first, lengths, max_tokens)


def token_batches(order: list[int], sizes: list[int], max_tokens: int) -> list[list[int]]:
    """`order` cut into consecutive batches whose padded size (rows * largest size)
    stays within `max_tokens`; an example larger than that is a batch of its own."""
    batches, batch, longest = [], [], 0
    for i in order:
        if batch and max(longest, sizes[i]) * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, sizes[i])
    return batches + [batch] if batch else batches


IdBatch = tuple[list[list[int]], list[list[int]]]  # source ids and target ids of a batch


class InMemoryCorpus:
    """Tokenized training pairs held in memory; `epoch_batches` decides each epoch's order."""

    def __init__(self, ds: datasets.Dataset, cfg: DataConfig, seed: int):
        self.src_ids, self.tgt_ids = ds["src_ids"][:], ds["tgt_ids"][:]
        lengths = [len(x) for x in self.src_ids], [len(x) for x in self.tgt_ids]
        self.order = (*lengths, cfg.max_tokens, seed)

    def batches(self, epoch: int, start: int = 0) -> Iterator[IdBatch]:
        """Epoch `epoch`'s batches from the `start`-th on."""
        for batch in epoch_batches(*self.order, epoch)[start:]:
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


def pad_batch(
    sequences: list[list[int]], multiple: int = 1, *, width: int = 0
) -> tuple[Tensor, Tensor]:
    """Right-pads id lists -> ids (N, W) and lengths (N,); W is the longest rounded up
    to `multiple`, or `width` if that is wider."""
    lengths = torch.tensor([len(s) for s in sequences])
    width = max(width, -(-int(lengths.max()) // multiple) * multiple)
    ids = torch.full((len(sequences), width), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids, lengths


def collate(
    src_ids: list[list[int]], tgt_ids: list[list[int]], *, static_shapes: bool = False
) -> dict[str, Tensor]:
    """-> src (N, S), src_len (N,), tgt_in (N, T) from BOS, tgt_out (N, T) up to EOS.

    `static_shapes`: N, S and T rounded up to `bucket` sizes. The added rows are a
    one-piece source (EOS) and an all-PAD target: they add nothing to the loss (PAD is
    ignored), and so nothing to the gradients, and masking covers the added columns.
    """
    if static_shapes:  # rows by 8 (matrix kernels' tiles), lengths finer: steps cost more
        extra = bucket(len(src_ids), ROWS_STEP) - len(src_ids)
        src_ids, tgt_ids = src_ids + [[EOS]] * extra, tgt_ids + [[PAD]] * extra
        longest = max(map(len, src_ids)), max(map(len, tgt_ids)) - 1
        widths = bucket(longest[0], LENGTH_STEP), bucket(longest[1], LENGTH_STEP) + 1
    else:
        widths = 0, 0
    src, src_len = pad_batch(src_ids, width=widths[0])
    tgt, _ = pad_batch(tgt_ids, width=widths[1])
    return {"src": src, "src_len": src_len, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}


Corpus = InMemoryCorpus | StreamingCorpus


def training_corpus(
    cfg: DataConfig, tokenizers: tuple[Tokenizer, Tokenizer], seed: int, raw=None
) -> Corpus:
    """The training split as `nmt train` batches it: streamed (`data.streaming`), or
    tokenized, cleaned and held in memory. `raw`: the split's text if already loaded."""
    if cfg.streaming:
        return StreamingCorpus(lambda: stream_pairs(cfg, cfg.train), tokenizers, cfg, seed)
    data, counts = training_split(cfg, tokenizers, raw)
    log.info("training pairs: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    if counts["kept"] == 0:
        raise DataError(f"no training pairs left after cleaning {cfg.train}: {counts}")
    return InMemoryCorpus(data, cfg, seed)

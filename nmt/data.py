"""Parallel data on Hugging Face `datasets`: loading, cleaning, tokenizing, batching.

A split comes from the Hub, from line-aligned files (`PREFIX.de` + `PREFIX.en`,
plain or .gz) or from one .tsv / .jsonl file, and always becomes a
`datasets.Dataset` with `src` and `tgt` text columns. Pairs are tokenized once
with `map(batched=True)`; batches group similar lengths under a token budget and
are a pure function of (seed, epoch), so a run can resume mid-epoch.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
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
        return _load_hub(cfg, split)
    path = Path(split)
    if path.suffix in {".tsv", ".jsonl"} or path.name.endswith((".tsv.gz", ".jsonl.gz")):
        reader = _read_tsv if ".tsv" in path.suffixes else _read_jsonl
        src, tgt = reader(path, cfg)
    else:
        src_path = _existing(Path(f"{split}.{cfg.src_lang}"))
        tgt_path = _existing(Path(f"{split}.{cfg.tgt_lang}"))
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if len(src) != len(tgt):
            raise DataError(
                f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
                "parallel files must be line-aligned"
            )
    return datasets.Dataset.from_dict({"src": src, "tgt": tgt})


def _load_hub(cfg: DataConfig, split: str) -> datasets.Dataset:
    ds = datasets.load_dataset(cfg.hub, cfg.hub_config or None, split=split)
    if "translation" in ds.column_names:  # the common {"translation": {"de": ..., "en": ...}}
        src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang

        def pick(rows):
            return {
                "src": [pair[src_lang] for pair in rows["translation"]],
                "tgt": [pair[tgt_lang] for pair in rows["translation"]],
            }

    else:
        src_col, tgt_col = cfg.src_column or cfg.src_lang, cfg.tgt_column or cfg.tgt_lang
        for col in (src_col, tgt_col):
            if col not in ds.column_names:
                raise DataError(
                    f"{cfg.hub} split {split!r} has no column {col!r}: {ds.column_names}"
                )

        def pick(rows):
            return {"src": rows[src_col], "tgt": rows[tgt_col]}

    return ds.map(pick, batched=True, remove_columns=ds.column_names, num_proc=_procs(cfg, ds))


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


def _read_tsv(path: Path, cfg: DataConfig) -> tuple[list[str], list[str]]:
    src, tgt = [], []
    for number, line in enumerate(read_lines(_existing(path)), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path} line {number}: expected 2 tab-separated fields, got {len(fields)}"
            )
        src.append(fields[0])
        tgt.append(fields[1])
    return src, tgt


def _read_jsonl(path: Path, cfg: DataConfig) -> tuple[list[str], list[str]]:
    src_key, tgt_key = cfg.src_column or cfg.src_lang, cfg.tgt_column or cfg.tgt_lang
    src, tgt = [], []
    for number, line in enumerate(read_lines(_existing(path)), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row = row.get("translation", row)
            src.append(row[src_key])
            tgt.append(row[tgt_key])
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
            raise DataError(
                f"{path} line {number}: expected a JSON object with {src_key!r} and {tgt_key!r} "
                "(or a 'translation' object holding them)"
            ) from None
        if not isinstance(src[-1], str) or not isinstance(tgt[-1], str):
            raise DataError(f"{path} line {number}: {src_key!r} and {tgt_key!r} must be strings")
    return src, tgt


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
    src_lengths = [len(ids) - 1 for ids in ds["src_ids"][:]]  # without EOS
    tgt_lengths = [len(ids) - 2 for ids in ds["tgt_ids"][:]]  # without BOS, EOS
    counts = {"empty": 0, "too_long": 0, "bad_ratio": 0}
    keep = []
    for i, (s, t) in enumerate(zip(src_lengths, tgt_lengths, strict=True)):
        if s == 0 or t == 0:
            counts["empty"] += 1
        elif s > cfg.max_len or t > cfg.max_len:
            counts["too_long"] += 1
        elif max(s, t) / min(s, t) > cfg.max_ratio:
            counts["bad_ratio"] += 1
        else:
            keep.append(i)
    counts["kept"] = len(keep)
    return (ds if len(keep) == len(ds) else ds.select(keep)), counts


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
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.src_lengths)))
        rng.shuffle(order)
        order.sort(key=lambda i: (self.tgt_lengths[i], self.src_lengths[i]))
        batches, batch, longest = [], [], 0
        for i in order:
            size = max(self.src_lengths[i], self.tgt_lengths[i])
            if batch and max(longest, size) * (len(batch) + 1) > self.max_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, size)
        if batch:
            batches.append(batch)
        rng.shuffle(batches)
        return batches


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

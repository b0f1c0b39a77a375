"""The training loop: data and tokenizers, optimisation, validation, checkpoints, resume.

A run directory holds `config.yaml`, `src.model`/`tgt.model` (SentencePiece),
`last.pt`, `best.pt` and `metrics.jsonl`. Everything a resumed run needs
(optimizer, schedule, scaler, RNG, the position in the epoch, early stopping)
is in `last.pt`, so stopping after N steps and resuming for N more gives the
same parameters as one unbroken run.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from nmt import checkpoint
from nmt.config import Config, TrainConfig
from nmt.data import Batches, clean, collate, load_split, tokenize
from nmt.metrics import MetricsLog, bleu
from nmt.model import Seq2Seq, autocast
from nmt.tokenizer import PAD, Tokenizer, train_spm
from nmt.translate import Translator

log = logging.getLogger(__name__)


class RunError(ValueError):
    """A run directory that cannot be started or resumed as asked."""


@dataclass
class Progress:
    """Where training is; saved in every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # index of the next batch of `epoch`
    train_seconds: float = 0.0
    best_bleu: float = -1.0
    bad_validations: int = 0  # since the best, for early stopping
    lr_scale: float = 1.0  # plateau decay factor
    schedule_start: int = 0  # the step the schedule (warm-up) counts from; moved by a reset
    plateau_bad: int = 0
    skipped_steps: int = 0  # fp16 overflow: the scaler skipped the update
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 on a GPU that has it, else fp16 on CUDA, fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def learning_rate(cfg: TrainConfig, step: int, lr_scale: float) -> float:
    """Linear warm-up, then constant or inverse square root; times the plateau scale."""
    step = max(step, 1)
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "inverse_sqrt" and step > cfg.warmup_steps:
        warm = math.sqrt(cfg.warmup_steps / step)
    return max(cfg.lr * warm * lr_scale, cfg.min_lr if cfg.schedule == "plateau" else 0.0)


def train(
    cfg: Config | None,
    out_dir: Path,
    *,
    resume: bool = False,
    overrides: list[str] = (),
    reset_optimizer: bool = False,
    device: str = "auto",
) -> Progress:
    """Trains until max_steps, max_epochs, max_time or early stopping; returns the progress.

    With `resume`, `cfg` is ignored: the run's own config is used, with `overrides` on top.
    """
    out_dir = Path(out_dir)
    last = out_dir / "last.pt"
    if resume:
        if not last.exists():
            raise RunError(f"cannot resume: {last} does not exist")
        cfg, model, tokenizers, saved = checkpoint.load(last)
        if overrides:
            cfg = cfg.replace(overrides)
            write_run_files(out_dir, cfg, tokenizers)
            log.info("overrides applied on resume: %s", " ".join(overrides))
    elif last.exists():
        raise RunError(f"{out_dir} already holds a run: pass --resume, or choose another --out")

    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)
    dev = resolve_device(device)
    precision = resolve_precision(tc.precision, dev)

    train_data = load_split(cfg.data, cfg.data.train)
    valid_data = load_split(cfg.data, cfg.data.valid)
    if not resume:
        tokenizers = build_tokenizers(cfg, train_data)
        write_run_files(out_dir, cfg, tokenizers)
        model = Seq2Seq(cfg.model, len(tokenizers[0]), len(tokenizers[1]), pad=PAD)
        saved = {}
    train_data, counts = clean(tokenize(train_data, *tokenizers, cfg.data), cfg.data)
    valid_data = tokenize(valid_data, *tokenizers, cfg.data)
    log.info("training pairs: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    if counts["kept"] == 0:
        raise RunError(f"no training pairs left after cleaning {cfg.data.train}: {counts}")

    model.to(dev).train()
    optimizer = build_optimizer(tc, model)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    progress = Progress()
    if saved:
        progress = Progress(**saved["progress"])
        torch.set_rng_state(saved["rng"]["torch"])
        if dev.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"])
        if reset_optimizer:
            progress.lr_scale, progress.plateau_bad = 1.0, 0
            progress.schedule_start = progress.step
            log.info("optimizer and schedule reset")
        else:
            optimizer.load_state_dict(saved["optimizer"])
            scaler.load_state_dict(saved["scaler"])

    src_ids, tgt_ids = train_data["src_ids"][:], train_data["tgt_ids"][:]
    batches = Batches(
        [len(x) for x in src_ids], [len(x) for x in tgt_ids], cfg.data.max_tokens, tc.seed
    )
    translator = Translator(model, tokenizers, cfg, device=dev)
    logger = MetricsLog(out_dir, tc.log_every, sys.stderr.isatty())
    log.info(
        "device=%s precision=%s parameters=%d steps=%d->%d",
        dev,
        precision,
        sum(p.numel() for p in model.parameters()),
        progress.step,
        tc.max_steps,
    )

    def save_checkpoints(is_best: bool) -> None:
        state = {
            "progress": progress.__dict__,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if dev.type == "cuda" else None,
            },
        }
        checkpoint.save(last, cfg=cfg, model=model, tokenizers=tokenizers, state=state)
        if is_best:  # for translating, not resuming: a third of last.pt without Adam's moments
            best_state = {"progress": progress.__dict__}
            checkpoint.save(
                out_dir / "best.pt", cfg=cfg, model=model, tokenizers=tokenizers, state=best_state
            )

    def validate() -> bool:
        """Scores the val split, updates early stopping and plateau decay; True to stop."""
        result = evaluate(model, translator, valid_data, cfg, dev)
        result.update(step=progress.step, epoch=progress.epoch)
        progress.history.append(result)
        improved = result["bleu"] > progress.best_bleu
        if improved:
            progress.best_bleu, progress.bad_validations, progress.plateau_bad = (
                result["bleu"],
                0,
                0,
            )
        else:
            progress.bad_validations += 1
            progress.plateau_bad += 1
            if tc.schedule == "plateau" and progress.plateau_bad >= tc.decay_patience:
                progress.lr_scale *= tc.decay_factor
                progress.plateau_bad = 0
        lr = learning_rate(tc, progress.step - progress.schedule_start, progress.lr_scale)
        logger.event("valid", **result, lr=lr)
        save_checkpoints(improved)
        return bool(tc.patience and progress.bad_validations >= tc.patience)

    start = time.perf_counter() - progress.train_seconds
    stop = progress.step >= tc.max_steps or bool(
        tc.max_time and progress.train_seconds >= tc.max_time
    )
    validated = progress.step  # the step of the last validation: never twice for one step
    while not stop:
        epoch_batches = batches.epoch(progress.epoch)
        while progress.batch_in_epoch < len(epoch_batches) and not stop:
            group = epoch_batches[
                progress.batch_in_epoch : progress.batch_in_epoch + tc.accum_steps
            ]
            lr = learning_rate(tc, progress.step + 1 - progress.schedule_start, progress.lr_scale)
            for g in optimizer.param_groups:
                g["lr"] = lr
            parts = [collate([src_ids[i] for i in b], [tgt_ids[i] for i in b]) for b in group]
            stats = train_step(
                model, parts, optimizer, scaler, cfg=tc, precision=precision, device=dev
            )
            progress.skipped_steps += stats.pop("skipped")
            progress.step += 1
            progress.batch_in_epoch += len(group)
            progress.train_seconds = time.perf_counter() - start
            logger.step(progress, lr=lr, total=tc.max_steps, **stats)
            out_of_time = bool(tc.max_time and progress.train_seconds >= tc.max_time)
            stop = progress.step >= tc.max_steps or out_of_time
            if progress.step % tc.valid_every == 0 or stop:
                stop = validate() or stop
                validated = progress.step
        if progress.batch_in_epoch >= len(epoch_batches):
            progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
            if tc.max_epochs and progress.epoch >= tc.max_epochs:
                stop = True
                if validated != progress.step:
                    validate()
    logger.close()
    return progress


def train_step(
    model: Seq2Seq,
    parts: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    cfg: TrainConfig,
    precision: str,
    device: torch.device,
) -> dict[str, float]:
    """One optimizer step over `parts` (accumulated batches); loss per target token."""
    tokens = sum(int((p["tgt_out"] != PAD).sum()) for p in parts)
    total = 0.0
    for part in parts:
        part = {k: v.to(device, non_blocking=True) for k, v in part.items()}
        with autocast(device, precision):
            logits = model(part["src"], part["src_len"], part["tgt_in"])  # (N, T, V)
        # the loss in fp32, outside autocast: it sums over the whole batch
        loss = (
            F.cross_entropy(
                logits.float().flatten(0, 1),
                part["tgt_out"].flatten(),
                ignore_index=PAD,
                label_smoothing=cfg.label_smoothing,
                reduction="sum",
            )
            / tokens
        )
        scaler.scale(loss).backward()  # the scaler is a no-op unless precision == "fp16"
        total += loss.detach()
    scaler.unscale_(optimizer)  # so clipping sees the true gradient norm
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    scaler.step(optimizer)  # skipped if fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    skipped = scaler.is_enabled() and scaler.get_scale() < scale
    return {"loss": total, "grad_norm": grad_norm, "tokens": tokens, "skipped": int(skipped)}


@torch.no_grad()
def evaluate(model: Seq2Seq, translator: Translator, valid, cfg: Config, device) -> dict[str, Any]:
    """Val loss and perplexity (teacher forcing, no smoothing) and greedy BLEU.

    `valid` is the tokenized val split; sources are truncated as in translation.
    """
    was_training = model.training
    model.eval()
    src_ids = translator.encode(valid["src"][:])
    tgt_ids = valid["tgt_ids"][:]
    budget = cfg.train.valid_batch_tokens
    loss_sum, count = 0.0, 0
    for batch in Batches([len(x) for x in src_ids], [len(x) for x in tgt_ids], budget, 0).epoch(0):
        part = collate([src_ids[i] for i in batch], [tgt_ids[i] for i in batch])
        part = {k: v.to(device) for k, v in part.items()}
        logits = model(part["src"], part["src_len"], part["tgt_in"])
        loss_sum += F.cross_entropy(
            logits.float().flatten(0, 1),
            part["tgt_out"].flatten(),
            ignore_index=PAD,
            reduction="sum",
        ).item()
        count += int((part["tgt_out"] != PAD).sum())
    hyps = translator.translate(valid["src"][:], beam=1, max_tokens=budget)
    score, _ = bleu([nbest[0].text for nbest in hyps], valid["tgt"][:])
    model.train(was_training)
    loss = loss_sum / max(count, 1)
    return {
        "loss": round(loss, 4),
        "ppl": round(math.exp(min(loss, 50)), 2),
        "bleu": round(score, 2),
    }


def build_tokenizers(cfg: Config, train_data) -> tuple[Tokenizer, Tokenizer]:
    """SentencePiece on the training split: one joint model, or one per language."""
    dc = cfg.data
    options = dict(
        vocab_size=dc.vocab_size, model_type=dc.spm_model, character_coverage=dc.character_coverage
    )
    if dc.joint_vocab:
        joint = Tokenizer(train_spm(train_data["src"][:] + train_data["tgt"][:], **options))
        return joint, joint
    return Tokenizer(train_spm(train_data["src"][:], **options)), Tokenizer(
        train_spm(train_data["tgt"][:], **options)
    )


def build_optimizer(cfg: TrainConfig, model: Seq2Seq) -> torch.optim.Optimizer:
    make = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel over all parameters instead of several per tensor
    return make(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True
    )


def write_run_files(out_dir: Path, cfg: Config, tokenizers: tuple[Tokenizer, Tokenizer]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out_dir / "src.model").write_bytes(tokenizers[0].model_bytes)
    (out_dir / "tgt.model").write_bytes(tokenizers[1].model_bytes)

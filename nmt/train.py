"""The training loop: data and tokenizers, optimisation, validation, checkpoints, resume.

A run directory holds `config.yaml`, `src.model`/`tgt.model` (SentencePiece),
`last.pt`, `best.pt` and `metrics.jsonl`. Everything a resumed run needs
(optimizer, schedule, scaler, RNG, the position in the epoch, early stopping)
is in `last.pt`, so stopping after N steps (or being killed after the
checkpoint of step N) and resuming gives the same parameters as one unbroken run.

Under torchrun each step's group of batches is dealt out across the ranks
(`nmt.distributed`): the same global batch as one process with
`accum_steps * world_size` accumulated batches, and the same result.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from nmt import checkpoint, distributed
from nmt.config import Config, TrainConfig
from nmt.data import (
    Batches,
    InMemoryCorpus,
    StreamingCorpus,
    collate,
    load_split,
    stream_pairs,
    tokenize,
    training_split,
)
from nmt.distributed import World
from nmt.metrics import MetricsLog, bleu
from nmt.model import PrecisionError, Seq2Seq, autocast, cpu_runs
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
    skipped_steps: int = 0  # updates skipped for a non-finite loss or gradient
    nonfinite_in_row: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 on a GPU that has it, else fp16 on CUDA; on a CPU bf16 where it has
    bf16 matrix units (AMX, AVX-512 BF16), else fp32."""
    if precision == "fp16" and device.type == "cpu":  # oneDNN has no fp16 LSTM
        raise PrecisionError("train.precision=fp16 needs a GPU; on a CPU use fp32 or auto")
    if precision == "bf16" and device.type == "cpu" and not cpu_runs("bf16"):
        raise PrecisionError(
            "train.precision=bf16 needs a CPU with AVX-512: this one has no bf16 kernels "
            "and trains about 40x slower in bf16 than in fp32; use fp32 or auto"
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16_units() else "fp32"


def cpu_has_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX or AVX-512 BF16), from Linux's
    CPU flags; elsewhere False. bf16 training measured 1.14-1.21x fp32 on a Xeon with
    AMX (docs/benchmarks.md); AVX-512 BF16 without AMX is not measured."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return "amx_bf16" in flags or "avx512_bf16" in flags


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

    With `resume`, `cfg` is ignored: the run's own config is used, with `overrides`
    on top. Under torchrun every rank calls this; rank 0 writes the run directory.
    """
    world, dev = distributed.init(device)
    if not world.is_main:
        logging.getLogger("nmt").setLevel(logging.WARNING)
    try:
        trainer = _start(
            cfg,
            Path(out_dir),
            world,
            dev,
            resume=resume,
            overrides=overrides,
            reset=reset_optimizer,
        )
        progress = trainer.run()
    except BaseException:
        distributed.close(world, wait=False)  # other ranks may never reach a barrier
        raise
    distributed.close(world)
    return progress


def keep_freed_memory_mapped() -> None:
    """Lets glibc keep large freed buffers for reuse instead of returning them to the OS.

    glibc serves large allocations with mmap and unmaps them on free, so a CPU
    training step faulted its large temporaries (logits, gate records) back in page
    by page: 24,000-27,000 page faults and 55-80 ms of system time a step at the
    peers' model size, against 85-484 faults and 5-23 ms with them kept
    (docs/benchmarks.md).
    Does nothing where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    if hasattr(libc, "mallopt"):
        libc.mallopt(m_mmap_threshold, 1 << 30)  # up to 1 GiB from the heap
        libc.mallopt(m_trim_threshold, 2**31 - 1)  # and keep its top (a C int: the most)


def _start(cfg, out_dir, world, dev, *, resume, overrides, reset) -> Trainer:
    """Opens or creates the run directory (rank 0) and builds the trainer (every rank)."""
    mode, cfg = on_main(world, lambda: _open_run(cfg, out_dir, resume, overrides))
    train_data = None  # the training text: loaded only if tokenizers or the cache need it
    if mode == "resume":  # the RNG state comes from the checkpoint
        cfg, model, tokenizers, saved = checkpoint.load(out_dir / "last.pt")
        if overrides:
            cfg = cfg.replace(overrides)
            on_main(world, lambda: write_run_files(out_dir, cfg, tokenizers))
            log.info("overrides applied on resume: %s", " ".join(overrides))
    tc = cfg.train
    # read first: a bad valid split fails in seconds, not after tokenizing the training data
    valid_text = load_split(cfg.data, cfg.data.valid)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if dev.type == "cpu":
        keep_freed_memory_mapped()
    torch.manual_seed(tc.seed)  # the same initial model on every rank
    random.seed(tc.seed)
    if mode == "new":
        if not cfg.data.streaming and world.is_main:
            train_data = load_split(cfg.data, cfg.data.train)
        on_main(world, lambda: write_run_files(out_dir, cfg, build_tokenizers(cfg, train_data)))
        tokenizers = (
            Tokenizer.from_file(out_dir / "src.model"),
            Tokenizer.from_file(out_dir / "tgt.model"),
        )
        model = Seq2Seq(cfg.model, len(tokenizers[0]), len(tokenizers[1]), pad=PAD)
        saved = {}
    if world.rank:  # dropout differs across ranks, as their data does
        torch.manual_seed(tc.seed + world.rank)

    if cfg.data.streaming:
        corpus = StreamingCorpus(
            lambda: stream_pairs(cfg.data, cfg.data.train), tokenizers, cfg.data, tc.seed
        )
    else:
        if cfg.data.cache_dir and world.distributed:

            def fill_cache() -> None:  # rank 0 tokenizes into the cache; the others map it
                training_split(cfg.data, tokenizers, train_data)

            on_main(world, fill_cache)
        train_data, counts = training_split(cfg.data, tokenizers, train_data)
        log.info("training pairs: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
        if counts["kept"] == 0:
            raise RunError(f"no training pairs left after cleaning {cfg.data.train}: {counts}")
        corpus = InMemoryCorpus(train_data, cfg.data, tc.seed)
    valid_data = tokenize(valid_text, *tokenizers, cfg.data)
    return Trainer(
        cfg=cfg,
        out_dir=out_dir,
        world=world,
        device=dev,
        model=model,
        tokenizers=tokenizers,
        corpus=corpus,
        valid_data=valid_data,
        saved=saved,
        reset_optimizer=reset,
    )


def _open_run(cfg, out_dir: Path, resume: bool, overrides) -> tuple[str, Config]:
    """-> ("new", config) or ("resume", None): what to do with the run directory."""
    last = out_dir / "last.pt"
    if resume:
        if last.exists():
            return "resume", None  # the config is last.pt's, read by every rank
        if not (out_dir / "config.yaml").is_file():
            raise RunError(f"cannot resume: {last} does not exist")
        # stopped before its first checkpoint: start again from its own config
        log.warning("%s holds no checkpoint yet: starting the run from step 0", out_dir)
        return "new", Config.from_yaml(out_dir / "config.yaml", overrides)
    if last.exists():
        raise RunError(f"{out_dir} already holds a run: pass --resume, or choose another --out")
    _check_writable(out_dir)  # before minutes of SentencePiece training, not after
    return "new", cfg


def _check_writable(out_dir: Path) -> None:
    probe = out_dir / ".write-test"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunError(f"cannot write to run directory {out_dir}: {err.strerror or err}") from None


def on_main(world: World, work: Callable[[], Any]) -> Any:
    """`work()` on rank 0, its result on every rank; an error there is raised on all
    ranks (with its message), so no rank waits forever for a rank that failed."""
    result, failure = None, None
    if world.is_main:
        try:
            result = work()
        except (ValueError, OSError) as err:
            if not world.distributed:
                raise
            failure = err
    result, message = distributed.broadcast((result, failure and str(failure)), world)
    if message is not None:
        raise failure if failure is not None else RunError(message)
    return result


class Trainer:
    """The state of a run between steps: model, optimizer, progress, data, log."""

    def __init__(
        self,
        *,
        cfg: Config,
        out_dir: Path,
        world: World,
        device: torch.device,
        model: Seq2Seq,
        tokenizers: tuple[Tokenizer, Tokenizer],
        corpus: InMemoryCorpus | StreamingCorpus,
        valid_data,
        saved: dict,
        reset_optimizer: bool,
    ):
        """`saved`: a checkpoint's training state to resume from ({} for a new run)."""
        tc = cfg.train
        self.cfg, self.out_dir, self.world, self.device = cfg, out_dir, world, device
        self.precision = resolve_precision(tc.precision, device)
        self.corpus, self.valid_data, self.tokenizers = corpus, valid_data, tokenizers
        self.model = model.to(device).train()
        self.ddp = model  # what the training step calls: the model or its DDP wrapper
        if world.distributed:
            ids = [device] if device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
        self.optimizer = build_optimizer(tc, model)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.progress = Progress()
        self.saved_step = None  # the step of the last checkpoint written
        if saved:
            self._restore(saved, reset_optimizer)
        # skipped steps, counted on the device between checks (_check_nonfinite)
        self.nonfinite_in_row = torch.tensor(float(self.progress.nonfinite_in_row), device=device)
        self.nonfinite_since_check = torch.zeros((), device=device)
        self.translator = Translator(model, tokenizers, cfg, device=device)
        self.logger = None
        if world.is_main:
            resumed_at = self.progress.step if saved else None
            self.logger = MetricsLog(
                out_dir, tc.log_every, sys.stderr.isatty(), resumed_at=resumed_at
            )
        log.info(
            "device=%s precision=%s world=%d parameters=%d steps=%d->%d",
            device,
            self.precision,
            world.size,
            sum(p.numel() for p in model.parameters()),
            self.progress.step,
            tc.max_steps,
        )

    def _restore(self, saved: dict, reset_optimizer: bool) -> None:
        self.progress = Progress(**saved["progress"])
        self.saved_step = self.progress.step
        rng = saved["rng"]
        ranks = rng.get("ranks") or [rng["torch"]]
        if len(ranks) == self.world.size:
            torch.set_rng_state(ranks[self.world.rank])
        else:  # another world size: dropout masks cannot continue exactly
            log.warning("resuming %d ranks from a %d-rank run", self.world.size, len(ranks))
            torch.manual_seed(self.cfg.train.seed + self.world.rank + self.progress.step)
        if self.device.type == "cuda" and rng.get("cuda") is not None and not self.world.rank:
            torch.cuda.set_rng_state(rng["cuda"])
        if reset_optimizer:
            self.progress.lr_scale, self.progress.plateau_bad = 1.0, 0
            self.progress.schedule_start = self.progress.step
            log.info("optimizer and schedule reset")
        else:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scaler.load_state_dict(saved["scaler"])

    def run(self) -> Progress:
        tc, progress = self.cfg.train, self.progress
        start = time.perf_counter() - progress.train_seconds
        stop = self._stop_now()
        validated = progress.step  # the step of the last validation: never twice for one step
        group_size = tc.accum_steps * self.world.size
        try:
            while not stop:
                batches = self.corpus.batches(progress.epoch, progress.batch_in_epoch)
                for group in _chunks(batches, group_size):
                    lr = learning_rate(
                        tc, progress.step + 1 - progress.schedule_start, progress.lr_scale
                    )
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    stats = self._step(group)
                    progress.step += 1
                    progress.batch_in_epoch += len(group)
                    progress.train_seconds = time.perf_counter() - start
                    self._count_nonfinite(stats.pop("skipped"))
                    stop = self._stop_now()
                    validating = progress.step % tc.valid_every == 0 or stop
                    if validating or progress.step % tc.log_every == 0:
                        self._check_nonfinite()  # a host sync: only at these steps
                    if self.logger:
                        self.logger.step(progress, lr=lr, total=tc.max_steps, **stats)
                    if validating:
                        stop = self._validate() or stop
                        validated = progress.step
                    if stop:
                        break
                else:  # the epoch is over
                    if progress.batch_in_epoch == 0:
                        raise RunError(
                            f"no training pairs left after cleaning {self.cfg.data.train}"
                        )
                    progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
                    if tc.max_epochs and progress.epoch >= tc.max_epochs:
                        stop = True
                        if validated != progress.step:
                            self._check_nonfinite()
                            self._validate()
        finally:
            if self.logger:
                self.logger.close()
        return progress

    def _step(self, group: list) -> dict[str, Any]:
        """One optimizer step over a group of batches, dealt out across the ranks."""
        tokens = sum(len(t) - 1 for _, tgt in group for t in tgt)  # every rank's target tokens
        sentences = sum(len(tgt) for _, tgt in group)
        mine = group[self.world.rank :: self.world.size]
        parts = [collate(src, tgt) for src, tgt in mine or group[:1]]
        return train_step(
            self.ddp,
            parts,
            self.optimizer,
            self.scaler,
            cfg=self.cfg.train,
            precision=self.precision,
            device=self.device,
            tokens=tokens,
            sentences=sentences,
            world=self.world,
            idle=not mine,
        )

    def _stop_now(self) -> bool:
        """max_steps, or rank 0's clock past max_time: every rank stops at the same step."""
        tc, progress = self.cfg.train, self.progress
        if progress.step >= tc.max_steps:
            return True
        if not tc.max_time:
            return False
        return distributed.broadcast(progress.train_seconds >= tc.max_time, self.world)

    def _count_nonfinite(self, skipped: Tensor) -> None:
        """Counts skipped steps on the device: no host sync inside a step."""
        self.nonfinite_in_row = (self.nonfinite_in_row + 1) * skipped  # 0 after a good step
        self.nonfinite_since_check += skipped

    def _check_nonfinite(self) -> None:
        """Reads the counts (a host sync: at log steps, validations and the end) and stops
        the run after `train.max_nonfinite` skipped steps in a row."""
        progress, limit = self.progress, self.cfg.train.max_nonfinite
        skipped, in_row = int(self.nonfinite_since_check), int(self.nonfinite_in_row)
        self.nonfinite_since_check.zero_()
        progress.skipped_steps += skipped
        progress.nonfinite_in_row = in_row
        if skipped:
            log.warning(
                "step %d: %d updates skipped since the last check for a non-finite loss or "
                "gradient (%d in a row)",
                progress.step,
                skipped,
                in_row,
            )
        if in_row >= limit:
            last = self.out_dir / "last.pt"
            kept = f"{last} (step {self.saved_step})" if self.saved_step is not None else "none yet"
            raise RunError(
                f"stopped at step {progress.step}: {in_row} steps in a row had a non-finite loss "
                f"or gradient (train.max_nonfinite={limit}); the last good checkpoint is {kept}"
            )

    def _validate(self) -> bool:
        """Rank 0 scores the val split and updates early stopping and plateau decay; every
        rank then takes its progress and saves. True to stop."""
        improved = on_main(self.world, self._score_validation)
        fields = distributed.broadcast(dataclasses.asdict(self.progress), self.world)
        seconds = self.progress.train_seconds  # each rank keeps its own clock
        self.progress.__dict__.update(fields, train_seconds=seconds)
        self._save(improved)
        tc = self.cfg.train
        return bool(tc.patience and self.progress.bad_validations >= tc.patience)

    def _score_validation(self) -> bool:
        tc, progress = self.cfg.train, self.progress
        result = evaluate(self.model, self.translator, self.valid_data, self.cfg, self.device)
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
        self.logger.event("valid", **result, lr=lr)
        return improved

    def _save(self, is_best: bool) -> None:
        """last.pt (and best.pt) from rank 0, with every rank's RNG state."""
        rng_states = distributed.gather(torch.get_rng_state(), self.world)
        on_main(self.world, lambda: self._write_checkpoints(is_best, rng_states))
        self.saved_step = self.progress.step

    def _write_checkpoints(self, is_best: bool, rng_states: list) -> None:
        state = {
            "progress": dataclasses.asdict(self.progress),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": rng_states[0],
                "ranks": rng_states if self.world.distributed else None,
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            },
        }
        common = dict(cfg=self.cfg, model=self.model, tokenizers=self.tokenizers)
        checkpoint.save(self.out_dir / "last.pt", **common, state=state)
        if is_best:  # for translating, not resuming: a third of last.pt without Adam's moments
            best_state = {"progress": state["progress"]}
            checkpoint.save(self.out_dir / "best.pt", **common, state=best_state)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def train_step(
    model,
    parts: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    cfg: TrainConfig,
    precision: str,
    device: torch.device,
    tokens: int | None = None,
    sentences: int | None = None,
    world: World = distributed.ALONE,
    idle: bool = False,
) -> dict[str, Any]:
    """One optimizer step over `parts` (accumulated batches) on the summed loss
    divided by their target tokens or sentences (`cfg.loss_normalization`); the
    loss it returns is per target token either way.

    `model`: a Seq2Seq or its DDP wrapper. `tokens`, `sentences`: those of every
    rank's parts (default: these parts'). `idle`: this rank has no batch in the
    step; it runs `parts` with weight 0 only to join the gradient all-reduce.
    A non-finite loss or gradient skips the update: `skipped` is then 1, a device
    tensor like `loss` and `grad_norm`, so the step never waits for the device.
    The optimizer must be fused (`build_optimizer`).
    """
    tokens = tokens or sum(int((p["tgt_out"] != PAD).sum()) for p in parts)
    sentences = sentences or sum(p["tgt_out"].size(0) for p in parts)
    divisor = tokens if cfg.loss_normalization == "tokens" else sentences
    weight = 0.0 if idle else world.size / divisor  # DDP averages gradients over the ranks
    total = torch.zeros((), device=device)
    for i, part in enumerate(parts):
        part = _to_device(part, device)
        accumulating = i < len(parts) - 1 and isinstance(model, DistributedDataParallel)
        with model.no_sync() if accumulating else contextlib.nullcontext():
            with autocast(device, precision):  # the loss itself is fp32 (nmt.loss)
                loss = weight * model(
                    part["src"],
                    part["src_len"],
                    part["tgt_in"],
                    part["tgt_out"],
                    label_smoothing=cfg.label_smoothing,
                )
            scaler.scale(loss).backward()  # the scaler is a no-op unless precision == "fp16"
        total += loss.detach()
    scaler.unscale_(optimizer)  # so clipping sees the true gradient norm
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    # No host sync: the fused optimizer reads `found_inf` on the device and leaves
    # parameters, moments and step counts as they were when it is 1 (the protocol
    # GradScaler uses with fused optimizers). fp16's scaler then lowers its scale.
    skipped = (~torch.isfinite(grad_norm)).float()
    optimizer.grad_scale, optimizer.found_inf = None, skipped
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    loss = distributed.all_reduce_sum(total, world) / world.size * (divisor / tokens)
    return {"loss": loss, "grad_norm": grad_norm, "tokens": tokens, "skipped": skipped}


def _to_device(part: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Copies a collated batch to the device without waiting for the device.

    A copy from pageable memory waits for the GPU's queue to drain; from pinned
    memory it does not. Source lengths stay on the CPU, where packing needs them.
    """
    if device.type != "cuda":
        return part
    return {
        k: v if k == "src_len" else v.pin_memory().to(device, non_blocking=True)
        for k, v in part.items()
    }


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
        part = _to_device(part, device)
        loss_sum += float(model(part["src"], part["src_len"], part["tgt_in"], part["tgt_out"]))
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


def build_tokenizers(cfg: Config, train_data=None) -> tuple[Tokenizer, Tokenizer]:
    """SentencePiece on the training split: one joint model, or one per language.

    Without `train_data` (streaming), it learns from the split's first `data.spm_sample` pairs.
    """
    dc = cfg.data
    if train_data is None:
        pairs = list(itertools.islice(stream_pairs(dc, dc.train), dc.spm_sample))
        src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    else:
        src, tgt = train_data["src"][:], train_data["tgt"][:]
    options = dict(
        vocab_size=dc.vocab_size, model_type=dc.spm_model, character_coverage=dc.character_coverage
    )
    if dc.joint_vocab:
        joint = Tokenizer(train_spm(src + tgt, **options))
        return joint, joint
    return Tokenizer(train_spm(src, **options)), Tokenizer(train_spm(tgt, **options))


def build_optimizer(cfg: TrainConfig, model: Seq2Seq) -> torch.optim.Optimizer:
    make = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel over all parameters instead of several per tensor
    return make(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True
    )


def write_run_files(out_dir: Path, cfg: Config, tokenizers: tuple[Tokenizer, Tokenizer]) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (out_dir / "src.model").write_bytes(tokenizers[0].model_bytes)
        (out_dir / "tgt.model").write_bytes(tokenizers[1].model_bytes)
    except OSError as err:
        raise RunError(f"cannot write to run directory {out_dir}: {err.strerror or err}") from None

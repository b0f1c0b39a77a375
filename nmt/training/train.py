"""The training loop: the run directory, tokenizers and data, the steps, validation, resume.

A run directory holds `config.yaml`, `src.model`/`tgt.model` (SentencePiece), `last.pt`,
`best.pt` and `metrics.jsonl`. `last.pt` holds all a resumed run needs, so stopping
after N steps (or a kill after step N's checkpoint) and resuming gives the parameters
of one unbroken run. Under torchrun each step's batches are dealt out across the ranks
(`nmt.training.distributed`): one process's global batch of `accum_steps * world_size` batches;
each rank draws its own dropout masks, so only without dropout is it that process's run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from nmt import checkpoint, interrupts
from nmt.config import Config, TrainConfig
from nmt.corpus import Corpus, collate, tokenize, training_corpus, training_split
from nmt.data import DataError, load_split, tokenizer_text
from nmt.interrupts import Interrupted
from nmt.model import Seq2Seq
from nmt.plan import Plan, keep_freed_memory_mapped, plan_for, resolve_device
from nmt.runtime.captured_loss import CapturedLoss
from nmt.tokenizer import PAD, Tokenizer, build_tokenizers
from nmt.training import distributed
from nmt.training.distributed import World, on_main
from nmt.training.log import MetricsLog
from nmt.training.optimize import (
    SkippedSteps,
    TrainingLoss,
    build_optimizer,
    learning_rate,
    train_step,
)
from nmt.training.run_dir import (
    RunError,
    changed_settings,
    interrupted,
    open_run,
    write_run_files,
)
from nmt.training.state import Progress, restore_training, save_run, training_state
from nmt.training.validation import ValidSet, validate

log = logging.getLogger(__name__)


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

    With `resume`, the run goes on with `cfg` where given, else with its own config and
    `overrides` on top; either may change train.* and decode.*, not what the checkpoint's
    weights and batches were made with. Under torchrun every rank calls this; rank 0
    writes the run directory.
    """
    world, dev = distributed.init(resolve_device(device))
    if not world.is_main:
        logging.getLogger("nmt").setLevel(logging.WARNING)
    threads = torch.get_num_threads()  # train.threads is the run's, not the process's
    held, trainer = [], None  # held: the run's lock, on rank 0, until the end
    try:
        trainer = _start(cfg, Path(out_dir), world, dev, resume, overrides, reset_optimizer, held)
        progress = trainer.run()
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: one line, how to go on
        distributed.close(world, wait=False)
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        at = (trainer.progress.step, trainer.saved_step) if trainer else (None, None)
        raise interrupted(signum, Path(out_dir), *at) from None
    except BaseException:
        distributed.close(world, wait=False)  # other ranks may never reach a barrier
        raise
    finally:
        torch.set_num_threads(threads)
        for lock in held:
            lock.release()
    distributed.close(world)
    return progress


def _start(cfg, out_dir: Path, world: World, dev, resume, overrides, reset, held) -> Trainer:
    """Opens or creates the run directory (rank 0, which appends its lock to `held`) and
    builds the trainer (every rank)."""

    def open_on_main() -> tuple[str, Config]:
        mode, run_cfg, lock = open_run(cfg, out_dir, resume, overrides)
        held.append(lock)
        return mode, run_cfg

    mode, cfg = on_main(world, open_on_main)
    train_text, saved = None, {}  # the training text: loaded only if tokenizers or cache need it
    if mode == "resume":  # the RNG state comes from the checkpoint
        run_cfg, model, tokenizers, saved = checkpoint.load(out_dir / "last.pt")
        cfg = cfg or run_cfg.replace(overrides)
        if changed := changed_settings(run_cfg, cfg):
            on_main(world, lambda: write_run_files(out_dir, cfg, tokenizers))
            log.info("resuming with changed settings: %s", ", ".join(changed))
    tc, dc = cfg.train, cfg.data
    shapes = {
        "static_shapes": tc.static_shapes,
        "streaming": dc.streaming,
        "graphs": tc.cuda_graphs,
    }
    plan = plan_for(dev, tc.precision, training=True, model=cfg.model, **shapes)
    if plan.graphs and world.size > 1:  # DDP's all-reduce hooks are not in the graphs
        raise RunError("train.cuda_graphs=true runs in one process only, not under torchrun")
    if plan.graphs and tc.accum_steps > 1:
        # a graphed backward hands autograd its own gradient buffers, which become the
        # parameters' .grad: the next replay of that shape would overwrite, not add
        raise RunError("train.cuda_graphs=true needs train.accum_steps=1")
    # read first: a bad valid split fails in seconds, not after tokenizing the training data
    valid_text = load_split(dc, dc.valid)
    if not len(valid_text):  # else it would fail at the first validation, after training
        raise DataError(f"the validation split {dc.valid} holds no pairs")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if plan.keep_freed_memory:
        keep_freed_memory_mapped()
    torch.manual_seed(tc.seed)  # the same initial model on every rank
    random.seed(tc.seed)
    if mode == "new":
        if not dc.streaming and world.is_main:
            train_text = load_split(dc, dc.train)
            if not len(train_text):
                raise DataError(f"the training split {dc.train} holds no pairs")

        def write_tokenizers() -> None:  # on rank 0; every rank then reads them
            write_run_files(out_dir, cfg, build_tokenizers(dc, *tokenizer_text(dc, train_text)))

        on_main(world, write_tokenizers)
        tokenizers = tuple(Tokenizer.from_file(out_dir / f"{s}.model") for s in ("src", "tgt"))
        model = Seq2Seq(cfg.model, len(tokenizers[0]), len(tokenizers[1]), pad=PAD)
    if world.rank:  # dropout differs across ranks, as their data does
        torch.manual_seed(tc.seed + world.rank)
    if dc.cache_dir and world.distributed and not dc.streaming:
        # rank 0 tokenizes into the cache; the others then map it
        on_main(world, lambda: training_split(dc, tokenizers, train_text)[1])
    corpus = training_corpus(dc, tokenizers, tc.seed, train_text)
    valid = ValidSet.of(tokenize(valid_text, *tokenizers, dc), dc.max_len)
    run = Run(cfg, out_dir, model, tokenizers, corpus, valid)
    return Trainer(run, world, plan, saved=saved, reset=reset)


class Run(NamedTuple):
    """What a training run is made of, before its optimizer and progress."""

    cfg: Config
    out_dir: Path
    model: Seq2Seq
    tokenizers: tuple[Tokenizer, Tokenizer]
    corpus: Corpus
    valid: ValidSet


PROGRESS_FIELDS = {f.name for f in dataclasses.fields(Progress)}


class Trainer:
    """A run between steps: model, optimizer, progress, data, log."""

    def __init__(self, run: Run, world: World, plan: Plan, *, saved: dict, reset: bool):
        """`saved`: a checkpoint's training state to resume from ({} for a new run);
        `reset`: resume without its optimizer and schedule."""
        self.cfg, self.out_dir, model, self.tokenizers, self.corpus, self.valid = run
        self.world, self.plan, tc = world, plan, self.cfg.train
        self.model = model.to(plan.device).train()
        loss = TrainingLoss(self.model, plan, tc.label_smoothing)
        if plan.graphs:
            loss = CapturedLoss(loss)
        self.objective = distributed.wrap(loss, world, plan.device)  # what the steps call
        self.optimizer, self.scaler = build_optimizer(tc, model), plan.scaler()
        self.progress, self.saved_step = Progress(), None  # the step of the last checkpoint
        if saved:
            restore = {"plan": plan, "world": world, "seed": tc.seed, "reset": reset}
            self.progress = restore_training(saved, self.optimizer, self.scaler, **restore)
            self.saved_step = self.progress.step
        self.skipped = SkippedSteps(plan.device, self.progress.nonfinite_in_row)
        # validation decodes the model as it trains: in fp32, its weights as they are
        self.valid_plan = plan_for(plan.device, "fp32", training=False, model=model.cfg)
        resumed = self.progress.step if saved else None
        self.logger = None
        if world.is_main:
            self.logger = MetricsLog(self.out_dir, tc.log_every, sys.stderr.isatty(), resumed)
        size = sum(p.numel() for p in model.parameters())
        facts = (plan.device, plan.precision, world.size, size, self.progress.step, tc.max_steps)
        log.info("device=%s precision=%s world=%d parameters=%d steps=%d->%d", *facts)

    def run(self) -> Progress:
        """Trains to the end; a first Ctrl-C or SIGTERM stops it at the end of the step in
        progress and saves last.pt there (one process only: ranks would disagree on the
        step), a second one at once (`nmt.interrupts`)."""
        alone = contextlib.nullcontext(interrupts.Deferred())
        with alone if self.world.distributed else interrupts.deferred(_notice) as asked:
            return self._loop(asked)

    def _loop(self, asked: interrupts.Deferred) -> Progress:
        tc, progress = self.cfg.train, self.progress
        start = time.perf_counter() - progress.train_seconds
        stop = stop_now(tc, progress, self.world)
        validated = progress.step  # the step of the last validation: never twice for one step
        try:
            while not stop:
                batches = self.corpus.batches(progress.epoch, progress.batch_in_epoch)
                for group in _chunks(batches, tc.accum_steps * self.world.size):
                    if asked.signum is not None:
                        self._save_and_stop(asked.signum)
                    step = progress.step + 1 - progress.schedule_start
                    lr = learning_rate(tc, step, progress.lr_scale)
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    stats = self._step(group)
                    progress.step += 1
                    progress.batch_in_epoch += len(group)
                    progress.train_seconds = time.perf_counter() - start
                    self.skipped.add(stats.pop("skipped"))
                    stop = stop_now(tc, progress, self.world)
                    validating = progress.step % tc.valid_every == 0 or stop
                    if validating or progress.step % tc.log_every == 0:
                        self._check_skipped()  # a host sync: only at these steps
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
                    stop = bool(tc.max_epochs and progress.epoch >= tc.max_epochs)
                    if stop and validated != progress.step:
                        self._check_skipped()
                        self._validate()
        finally:
            if self.logger:
                self.logger.close()
        return progress

    def _save_and_stop(self, signum: int) -> None:
        """Saves last.pt at this step (between steps: the optimizer's state is whole) and
        raises `Interrupted`; resuming from it continues as the unbroken run would."""
        self._check_skipped()
        if self.saved_step != self.progress.step:
            rng = distributed.gather(torch.get_rng_state(), self.world)
            state = training_state(self.progress, self.optimizer, self.scaler, rng, plan=self.plan)
            run = (self.cfg, self.model, self.tokenizers)
            save_run(self.out_dir, *run, state=state, best=False, keep=False)
            self.saved_step = self.progress.step
        raise interrupts.Interrupted(signum)

    def _step(self, group: list) -> dict:
        """One optimizer step over a group of batches, dealt out across the ranks."""
        tokens = sum(len(t) - 1 for _, tgt in group for t in tgt)  # every rank's target tokens
        sentences = sum(len(tgt) for _, tgt in group)
        mine = group[self.world.rank :: self.world.size]
        static = self.plan.static_shapes
        parts = [collate(src, tgt, static_shapes=static) for src, tgt in mine or group[:1]]
        counts = {"tokens": tokens, "sentences": sentences, "world": self.world, "idle": not mine}
        counts.update(cfg=self.cfg.train, plan=self.plan)
        return train_step(self.objective, parts, self.optimizer, self.scaler, **counts)

    def _check_skipped(self) -> None:
        """Stops the run after `train.max_nonfinite` skipped updates in a row."""
        last = self.out_dir / "last.pt"
        kept = f"{last} (step {self.saved_step})" if self.saved_step is not None else "none yet"
        self.skipped.check(self.progress, self.cfg.train.max_nonfinite, kept)

    def _validate(self) -> bool:
        """Rank 0 scores the val split and updates early stopping and plateau decay; every
        rank then takes its progress, and rank 0 saves with every rank's RNG. True: stop."""
        improved = on_main(self.world, self._score_validation)
        main = distributed.broadcast(self.progress, self.world)  # each rank keeps its clock
        for name in PROGRESS_FIELDS - {"train_seconds"}:
            setattr(self.progress, name, getattr(main, name))
        rng = distributed.gather(torch.get_rng_state(), self.world)

        def save() -> None:
            state = training_state(self.progress, self.optimizer, self.scaler, rng, plan=self.plan)
            run = (self.cfg, self.model, self.tokenizers)
            save_run(self.out_dir, *run, state=state, best=improved)

        on_main(self.world, save)
        self.saved_step = self.progress.step
        tc = self.cfg.train
        return bool(tc.patience and self.progress.bad_validations >= tc.patience)

    def _score_validation(self) -> bool:
        tc, progress = self.cfg.train, self.progress
        result = validate(self.model, self.valid, self.tokenizers[1], self.valid_plan, self.cfg)
        result.update(step=progress.step, epoch=progress.epoch)
        improved = record_validation(progress, result, tc)
        lr = learning_rate(tc, progress.step - progress.schedule_start, progress.lr_scale)
        self.logger.event("valid", **result, lr=lr)
        return improved


def _notice(signum: int) -> None:
    log.info("stopping at the end of this step, saving last.pt (again: stop at once)")


def stop_now(tc: TrainConfig, progress: Progress, world: World) -> bool:
    """max_steps, or rank 0's clock past max_time: every rank stops at the same step."""
    if progress.step >= tc.max_steps:
        return True
    if not tc.max_time:
        return False
    return distributed.broadcast(progress.train_seconds >= tc.max_time, world)


def record_validation(progress: Progress, result: dict, tc: TrainConfig) -> bool:
    """Early stopping's and plateau decay's bookkeeping; True if the BLEU is the best yet."""
    progress.history.append(result)
    if result["bleu"] > progress.best_bleu:
        progress.best_bleu, progress.bad_validations, progress.plateau_bad = result["bleu"], 0, 0
        return True
    progress.bad_validations += 1
    progress.plateau_bad += 1
    if tc.schedule == "plateau" and progress.plateau_bad >= tc.decay_patience:
        progress.lr_scale *= tc.decay_factor
        progress.plateau_bad = 0
    return False


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk

"""What a run's `last.pt` holds besides the model, so that a resumed run continues as an
unbroken one: the `Progress`, the optimizer and scaler, every rank's random generators."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nmt import checkpoint
from nmt.config import Config
from nmt.plan import Plan
from nmt.training.run_dir import kept_checkpoints

log = logging.getLogger(__name__)


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


def save_run(
    out_dir: Path, cfg: Config, model, tokenizers, *, state: dict, best: bool, keep: bool = True
) -> None:
    """`last.pt` with the training `state`; `best.pt` too if `best`, and with
    `train.keep_last` a step checkpoint (`keep`: not for a save on an interrupt). Those
    are for translating and averaging, not resuming: a third of last.pt, no Adam moments."""
    common = dict(cfg=cfg, model=model, tokenizers=tokenizers)
    checkpoint.save(out_dir / "last.pt", **common, state=state)
    light = {"progress": state["progress"]}
    if best:
        checkpoint.save(out_dir / "best.pt", **common, state=light)
    if keep and cfg.train.keep_last:
        step = state["progress"]["step"]
        checkpoint.save(out_dir / f"step-{step}.pt", **common, state=light)
        for old in kept_checkpoints(out_dir)[: -cfg.train.keep_last]:
            old.unlink(missing_ok=True)


def training_state(progress: Progress, optimizer, scaler, rng_states: list, *, plan: Plan) -> dict:
    """What resuming needs; `rng_states`: every rank's CPU generator, in rank order."""
    ranks = rng_states if len(rng_states) > 1 else None
    rng = {"torch": rng_states[0], "ranks": ranks, "cuda": plan.device_rng_state()}
    state = {"progress": dataclasses.asdict(progress), "optimizer": optimizer.state_dict()}
    return {**state, "scaler": scaler.state_dict(), "rng": rng}


def restore_training(
    saved: dict, optimizer, scaler, *, plan: Plan, world, seed: int, reset: bool
) -> Progress:
    """Puts `training_state`'s `saved` back: this rank's generators (`world`: the ranks'
    World; `seed`: the run's), the optimizer and scaler unless `reset` (then the schedule
    restarts too)."""
    progress, rank, ranks, rng = Progress(**saved["progress"]), world.rank, world.size, saved["rng"]
    states = rng.get("ranks") or [rng["torch"]]
    if len(states) == ranks:
        torch.set_rng_state(states[rank])
    else:  # another world size: dropout masks cannot continue exactly
        log.warning("resuming %d ranks from a %d-rank run", ranks, len(states))
        torch.manual_seed(seed + rank + progress.step)
    if not rank:
        plan.set_device_rng_state(rng.get("cuda"))
    if reset:
        progress.lr_scale, progress.plateau_bad = 1.0, 0
        progress.schedule_start = progress.step
        log.info("optimizer and schedule reset")
    else:
        optimizer.load_state_dict(saved["optimizer"])
        if saved["scaler"]:  # runs saved before every precision had a scaler saved none
            scaler.load_state_dict(saved["scaler"])
    return progress

"""One optimizer step and what it needs: the training loss as a module (what DDP
wraps), the fused optimizer, the learning-rate schedule, and the count of updates
skipped for a non-finite loss or gradient, kept on the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from nmt.config import TrainConfig
from nmt.errors import NmtError
from nmt.model import Seq2Seq
from nmt.plan import Plan
from nmt.tokenizer import PAD
from nmt.training import distributed
from nmt.training.distributed import World

log = logging.getLogger(__name__)


class TrainingLoss(nn.Module):
    """The model's summed training loss with the plan's kernels, as a module's forward
    (DistributedDataParallel syncs gradients through a forward call)."""

    def __init__(self, model: Seq2Seq, plan: Plan, label_smoothing: float):
        super().__init__()
        self.model, self.kernels, self.label_smoothing = model, plan.kernels, label_smoothing

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        kernels, smoothing = self.kernels, self.label_smoothing
        return self.model.loss(
            src, src_len, tgt_in, tgt_out, label_smoothing=smoothing, kernels=kernels
        )


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    make = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel over all parameters instead of several per tensor
    return make(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True
    )


def learning_rate(cfg: TrainConfig, step: int, lr_scale: float) -> float:
    """Linear warm-up, then constant or inverse square root; times the plateau scale."""
    step = max(step, 1)
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "inverse_sqrt" and step > cfg.warmup_steps:
        warm = math.sqrt(cfg.warmup_steps / step)
    return max(cfg.lr * warm * lr_scale, cfg.min_lr if cfg.schedule == "plateau" else 0.0)


def train_step(
    objective: nn.Module,
    parts: list[dict[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    cfg: TrainConfig,
    plan: Plan,
    tokens: int | None = None,
    sentences: int | None = None,
    world: World = distributed.ALONE,
    idle: bool = False,
) -> dict[str, Any]:
    """One optimizer step over `parts` (accumulated batches) on the summed loss over their
    target tokens or sentences (`cfg.loss_normalization`); the loss returned is per token.

    `objective`: a `TrainingLoss` or its DDP wrapper. `tokens`, `sentences`: every rank's
    (default: these parts'). `idle`: this rank has no batch; it runs `parts` with weight 0
    only to join the gradient all-reduce. A non-finite loss or gradient skips the update:
    `skipped` is then 1, a device tensor like `loss` and `grad_norm`, so the step never
    waits for the device. The optimizer must be fused (`build_optimizer`) and the scaler
    the plan's (`Plan.scaler`), which skips such steps on the device."""
    tokens = tokens or sum(int((p["tgt_out"] != PAD).sum()) for p in parts)
    # rows with a target: a batch padded to static shapes has rows without one
    sentences = sentences or sum(int((p["tgt_out"] != PAD).any(1).sum()) for p in parts)
    divisor = tokens if cfg.loss_normalization == "tokens" else sentences
    weight = 0.0 if idle else world.size / divisor  # DDP averages gradients over the ranks
    total = torch.zeros((), device=plan.device)
    for i, part in enumerate(parts):
        part = plan.to_device(part)
        accumulating = i < len(parts) - 1 and isinstance(objective, DistributedDataParallel)
        with objective.no_sync() if accumulating else contextlib.nullcontext():
            with plan.autocast():  # the loss itself is fp32 (nmt.kernels.fused_loss)
                loss = weight * objective(**part)
            scaler.scale(loss).backward()  # a no-op scaler unless in fp16
        total += loss.detach()
    scaler.unscale_(optimizer)  # so clipping sees the true gradient norm
    grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.clip_norm)
    # No host sync: the scaler found the same non-finite gradients on the device, and the
    # fused optimizer leaves parameters, moments and step counts as they were then
    skipped = (~torch.isfinite(grad_norm)).float()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    loss = distributed.all_reduce_sum(total, world) / world.size * (divisor / tokens)
    return {"loss": loss, "grad_norm": grad_norm, "tokens": tokens, "skipped": skipped}


class NonFiniteError(NmtError):
    """Too many updates in a row skipped for a non-finite loss or gradient."""


class SkippedSteps:
    """Updates skipped for a non-finite loss or gradient, counted on the device (no
    host sync inside a step) and read at `check`."""

    def __init__(self, device: torch.device, in_row: int):
        self.in_row = torch.tensor(float(in_row), device=device)
        self.since_check = torch.zeros((), device=device)

    def add(self, skipped: Tensor) -> None:
        self.in_row = (self.in_row + 1) * skipped  # 0 after a good step
        self.since_check += skipped

    def check(self, progress, limit: int, last_good: str) -> None:
        """Adds the counts to `progress` (a checkpoint's Progress); a host sync. Raises
        after `limit` in a row, naming `last_good`, the checkpoint to go back to."""
        skipped, in_row = int(self.since_check), int(self.in_row)
        self.since_check.zero_()
        progress.skipped_steps, progress.nonfinite_in_row = progress.skipped_steps + skipped, in_row
        if skipped:
            message = "step %d: %d updates skipped since the last check for a non-finite loss"
            log.warning(message + " or gradient (%d in a row)", progress.step, skipped, in_row)
        if in_row >= limit:
            raise NonFiniteError(
                f"stopped at step {progress.step}: {in_row} steps in a row had a non-finite "
                f"loss or gradient (train.max_nonfinite={limit}); the last good checkpoint is "
                f"{last_good}"
            )

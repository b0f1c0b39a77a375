"""The run's metrics.jsonl: one JSON object per log line or validation, a progress bar
on a terminal (else periodic log lines), and TensorBoard where it is installed.
`nmt.reporting.curves` draws the learning curves from the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

from nmt.outputs import write_output

log = logging.getLogger(__name__)


class MetricsLog:
    """metrics.jsonl events, plus a progress bar on a terminal or periodic log lines."""

    def __init__(
        self, out_dir: Path, log_every: int, interactive: bool, resumed_at: int | None = None
    ):
        """`resumed_at`: the step of the checkpoint a resumed run starts from. Events
        after it (logged before a crash, and about to be logged again) are dropped,
        and so is a last line cut short by the crash."""
        path = out_dir / "metrics.jsonl"
        if resumed_at is not None and path.exists():
            _truncate(path, resumed_at)
        self.file = open(path, "a", encoding="utf-8")
        self.log_every, self.interactive = log_every, interactive
        self.tokens, self.loss, self.count, self.clock = 0, 0.0, 0, time.perf_counter()
        self.bar = None
        self.board = _tensorboard(out_dir)

    def _progress_bar(self, progress, total: int):
        if self.bar is None and self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=progress.step, unit="step", dynamic_ncols=True)
        return self.bar

    def step(self, progress, *, loss, grad_norm, tokens: int, lr: float, total: int) -> None:
        """`progress`: the trainer's Progress (step, epoch, train_seconds, skipped_steps)."""
        self.tokens += tokens
        self.loss = self.loss + loss  # stays a tensor: .item() only at log time (a sync point)
        self.count += 1
        bar = self._progress_bar(progress, total)
        if bar is not None:
            bar.update(1)
        if progress.step % self.log_every:
            return
        seconds = time.perf_counter() - self.clock
        record = {
            "step": progress.step,
            "epoch": progress.epoch,
            "loss": round(float(self.loss) / self.count, 4),
            "lr": lr,
            "grad_norm": round(float(grad_norm), 3),
            "tok_per_s": round(self.tokens / seconds),
            "elapsed": round(progress.train_seconds, 1),
            "skipped": progress.skipped_steps,
        }
        self.tokens, self.loss, self.count, self.clock = 0, 0.0, 0, time.perf_counter()
        self.event("train", **record)

    def event(self, kind: str, **record) -> None:
        self.file.write(json.dumps({"event": kind, **record}) + "\n")
        self.file.flush()
        line = " ".join(f"{k}={v}" for k, v in record.items())
        if self.bar is None:
            log.info("%s %s", kind, line)
        elif kind == "train":
            loss, lr, rate = record["loss"], record["lr"], record["tok_per_s"]
            self.bar.set_postfix_str(f"loss={loss:.3f} lr={lr:.2e} tok/s={rate}")
        else:
            self.bar.write(f"{kind} {line}")
        if self.board:
            for key, value in record.items():
                if key not in ("step", "epoch"):
                    self.board.add_scalar(f"{kind}/{key}", value, record["step"])

    def close(self) -> None:
        for sink in (self.file, self.bar, self.board):
            if sink is not None:
                sink.close()


def _truncate(path: Path, step: int) -> None:
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a crash
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
    write_output(path, "".join(kept))


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))

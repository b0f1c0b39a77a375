"""A run's learning curves, drawn from its metrics.jsonl (`nmt plot`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from nmt.errors import NmtError
from nmt.reporting.figures import png, pyplot


class MetricsError(NmtError):
    """A metrics.jsonl that is missing or not one."""


PANELS = [  # (title, event, key)
    ("training loss (label-smoothed)", "train", "loss"),
    ("validation loss", "valid", "loss"),
    ("validation perplexity", "valid", "ppl"),
    ("validation BLEU (greedy)", "valid", "bleu"),
    ("learning rate", "train", "lr"),
    ("training speed (target tokens/s)", "train", "tok_per_s"),
]


def plot_learning_curves(metrics: Path) -> bytes:
    """A run's metrics.jsonl -> its learning curves, six panels in one PNG."""
    events = [e for e in read_events(metrics) if e.get("event") in ("train", "valid")]
    if not events:  # six empty panels would look like a picture of a run
        raise MetricsError(f"{metrics} holds no training or validation step yet: nothing to plot")
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (title, kind, key) in zip(axes.flat, PANELS, strict=True):
        points = [(e["step"], e[key]) for e in events if e.get("event") == kind and key in e]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if kind == "valid" else None, markersize=3)
        ax.set_title(title, fontsize=10)
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Learning curves: {metrics.parent.name}")
    fig.tight_layout()
    return png(fig)


def read_events(metrics: Path) -> Iterator[dict]:
    """The records of a metrics.jsonl; a line that is not one raises a `MetricsError`
    naming it (a last line cut short by a crash is skipped, as `_truncate` does)."""
    if not metrics.is_file():
        raise MetricsError(f"{metrics} does not exist: is {metrics.parent} a run directory?")
    lines = metrics.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            if number == len(lines):
                return
            event = []
        if event is None:
            continue
        if not isinstance(event, dict) or not isinstance(event.get("step"), (int, float)):
            raise MetricsError(f"{metrics} line {number}: not a metrics record")
        yield event

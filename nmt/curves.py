"""Learning curves of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from nmt.figures import pyplot

PANELS = [  # (title, event, key)
    ("training loss (label-smoothed)", "train", "loss"),
    ("validation loss", "valid", "loss"),
    ("validation perplexity", "valid", "ppl"),
    ("validation BLEU (greedy)", "valid", "bleu"),
    ("learning rate", "train", "lr"),
    ("training speed (target tokens/s)", "train", "tok_per_s"),
]


def plot_learning_curves(metrics: Path, out: Path) -> None:
    plt = pyplot()
    if not metrics.is_file():
        raise FileNotFoundError(metrics)
    events = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
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
    fig.savefig(out, dpi=100)
    plt.close(fig)

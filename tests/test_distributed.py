"""torchrun with 2 CPU processes (gloo) trains the same model as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from nmt.training.train import train
from tests.conftest import tiny_config, tiny_train_args

ROOT = Path(__file__).resolve().parents[1]
# no dropout: the ranks draw different masks than one process would
COMMON = ("model.dropout=0.0", "train.threads=1", "train.valid_every=3", "train.log_every=1")


def torchrun(corpus: Path, run: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "nmt",
        "-q",
        *tiny_train_args(corpus, *COMMON),
        "--out",
        str(run),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(toy_corpus, tmp_path):
    # one process accumulating 2 batches per step == 2 ranks with one batch each
    single = tmp_path / "single"
    train(tiny_config(toy_corpus, *COMMON, "train.max_steps=8", "train.accum_steps=2"), single)

    double = tmp_path / "double"
    first = torchrun(toy_corpus, double, "train.max_steps=5")  # stop, then resume: all ranks
    assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun(toy_corpus, double, "--resume", "train.max_steps=8")
    assert second.returncode == 0, second.stderr[-3000:]

    expected = torch.load(single / "last.pt", weights_only=True)
    got = torch.load(double / "last.pt", weights_only=True)
    assert got["state"]["progress"]["step"] == expected["state"]["progress"]["step"] == 8
    assert got["state"]["progress"]["epoch"] == expected["state"]["progress"]["epoch"]
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(got["model"][name], tensor, rtol=1e-4, atol=1e-5)
    # only rank 0 logged: one train event per step, each step once
    events = [json.loads(line) for line in (double / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, 9))
    assert len(got["state"]["rng"]["ranks"]) == 2

"""Faults a long run meets: kill -9, NaN, a full disk, an unwritable directory,
hostile or broken checkpoint files. Each test asserts the exact outcome."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmt import checkpoint, outputs
from nmt.cli import main
from nmt.model import Seq2Seq
from nmt.training.optimize import NonFiniteError
from nmt.training.run_dir import RunError
from nmt.training.train import train
from tests.conftest import tiny_config, tiny_train_args

ROOT = Path(__file__).resolve().parents[1]


def parameters(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_parameters(a: Path, b: Path) -> None:
    first, second = parameters(a), parameters(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def train_args(corpus: Path, run: Path, *overrides: str) -> list[str]:
    return ["-q", *tiny_train_args(corpus, "train.threads=1", *overrides), "--out", str(run)]


def run_cli(args: list[str], prelude: str = "") -> subprocess.Popen:
    """`nmt ARGS` in a fresh interpreter, after running `prelude` in it."""
    code = f"{prelude}\nfrom nmt.cli import main\nmain({args!r})"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)


KILL_RUN = ("train.max_steps=40", "train.valid_every=3", "train.log_every=1")


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count('"event": "train"') if path.exists() else 0


def run_until(process: subprocess.Popen, run: Path, step: int, rng: random.Random) -> None:
    """Until the run has logged `step` steps, then a random few ms more (into a step, a
    validation or a checkpoint write); the process must still be running then."""
    deadline = time.monotonic() + 120
    while logged_steps(run) < step and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    assert process.poll() is None, "the run ended before it could be stopped"


def test_runs_killed_at_random_moments_resume_to_the_unbroken_result(toy_corpus, tmp_path):
    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    train(tiny_config(toy_corpus, *KILL_RUN, "train.threads=1"), unbroken)

    # three kills at random moments: after a random step (of 40), a random few ms later,
    # so some land in a step, some in a validation or a checkpoint write
    rng = random.Random(7)
    for kill_after in [*sorted(rng.sample(range(2, 35), 3)), None]:
        resume = ["--resume"] if (killed / "config.yaml").exists() else []
        process = run_cli(train_args(toy_corpus, killed, *KILL_RUN) + resume)
        if kill_after is not None:
            run_until(process, killed, kill_after, rng)
            process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
        expected = 0 if kill_after is None else -signal.SIGKILL
        assert process.returncode == expected, stderr.decode()

    assert_same_parameters(unbroken / "last.pt", killed / "last.pt")
    events = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, 41))


def test_a_kill_while_writing_a_checkpoint_leaves_the_last_one_whole(toy_corpus, tmp_path):
    run = tmp_path / "run"
    # the second save of last.pt writes half a file, then the process is killed
    prelude = """
import os, signal
real_fsync, calls = os.fsync, []
def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if "last.pt" in name:
        calls.append(name)
        if len(calls) == 2:
            os.ftruncate(fd, os.fstat(fd).st_size // 2); real_fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
"""
    process = run_cli(train_args(toy_corpus, run, *KILL_RUN), prelude)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL

    _, _, _, state = checkpoint.load(run / "last.pt")
    assert state["progress"]["step"] == 3  # the first checkpoint, whole
    assert list(run.glob(".last.pt.*.tmp"))  # the half-written one, never renamed
    train(None, run, resume=True)
    assert not list(run.glob(".last.pt.*.tmp"))  # removed by the run that holds the folder
    train(tiny_config(toy_corpus, *KILL_RUN, "train.threads=1"), tmp_path / "unbroken")
    assert_same_parameters(tmp_path / "unbroken" / "last.pt", run / "last.pt")


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(toy_corpus, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(toy_corpus, "train.max_steps=4")
    train(cfg, run)
    (run / "last.pt").unlink()
    (run / "best.pt").unlink()

    progress = train(None, run, resume=True)

    assert progress.step == 4
    train(cfg, tmp_path / "unbroken")
    assert_same_parameters(tmp_path / "unbroken" / "last.pt", run / "last.pt")


def poison_training_steps(monkeypatch, bad_steps: set[int]) -> None:
    """Training losses number `bad_steps` (1-based) are NaN."""
    loss, calls = Seq2Seq.loss, [0]

    def poisoned(self, *args, **kwargs):
        value = loss(self, *args, **kwargs)
        if self.training:
            calls[0] += 1
            if calls[0] in bad_steps:
                return value * float("nan")
        return value

    monkeypatch.setattr(Seq2Seq, "loss", poisoned)


def test_non_finite_steps_are_skipped_counted_and_leave_the_parameters_finite(
    toy_corpus, tmp_path, monkeypatch
):
    poison_training_steps(monkeypatch, {3, 4, 7})
    run = tmp_path / "run"

    progress = train(tiny_config(toy_corpus, "train.max_steps=10", "train.log_every=10"), run)

    assert progress.step == 10
    assert progress.skipped_steps == 3
    assert all(torch.isfinite(p).all() for p in parameters(run / "last.pt").values())
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["skipped"] == 3


def test_too_many_non_finite_steps_in_a_row_stop_the_run_and_keep_the_last_checkpoint(
    toy_corpus, tmp_path, monkeypatch
):
    poison_training_steps(monkeypatch, set(range(5, 100)))
    run = tmp_path / "run"
    cfg = tiny_config(
        toy_corpus, "train.valid_every=2", "train.max_nonfinite=3", "train.log_every=1"
    )

    with pytest.raises(NonFiniteError) as err:
        train(cfg, run)

    assert str(err.value) == (
        "stopped at step 7: 3 steps in a row had a non-finite loss or gradient "
        f"(train.max_nonfinite=3); the last good checkpoint is {run / 'last.pt'} (step 6)"
    )
    _, model, _, state = checkpoint.load(run / "last.pt")  # steps 5 and 6 changed nothing
    assert state["progress"]["step"] == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays(
    toy_corpus, tmp_path, monkeypatch, capsys
):
    run, opened = tmp_path / "run", []

    class FullDisk:  # the second last.pt gets 1,000 bytes onto the disk, then ENOSPC
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def close(self):
            self.file.close()

        def write(self, data):
            self.file.write(bytes(data[:1000]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_(path, mode="r", **kwargs):
        file = open(path, mode, **kwargs)
        opened.append(os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else path)
        return FullDisk(file) if sum("last.pt" in str(p) for p in opened) == 2 else file

    monkeypatch.setattr(outputs, "open", open_, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(train_args(toy_corpus, run, "train.valid_every=2", "train.max_steps=6"))

    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"nmt: error: cannot write checkpoint {run / 'last.pt'}: No space left on device; "
        "last.pt still holds the previous checkpoint\n"
    )
    _, _, _, state = checkpoint.load(run / "last.pt")
    assert state["progress"]["step"] == 2
    assert not list(run.glob(".last.pt*"))  # the half-written file is gone


def test_an_unwritable_run_directory_is_a_clear_error_before_any_work(
    toy_corpus, tmp_path, monkeypatch, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(train_args(toy_corpus, blocker / "run"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"nmt: error: cannot write to run directory {blocker / 'run'}: Not a directory\n"
    )

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(outputs, "_create_temp", refuse)  # root ignores file modes: simulate
    with pytest.raises(RunError, match=re.escape(f"{tmp_path / 'r'}: Permission denied")):
        train(tiny_config(toy_corpus), tmp_path / "r")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "nmt-checkpoint-1", "x": Boom()}))

    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(evil)
    assert str(err.value).startswith(f"{evil} is not a safe nmt checkpoint: ")
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_foreign_files_give_clear_errors(trained_run, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes((trained_run / "last.pt").read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")

    with pytest.raises(checkpoint.CheckpointError, match=f"^{re.escape(str(cut))} is truncated"):
        checkpoint.load(cut)
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(foreign)
    assert str(err.value) == f"{foreign} is not an nmt checkpoint"
    with pytest.raises(checkpoint.CheckpointError, match=f"^{re.escape(str(text))} is "):
        checkpoint.load(text)

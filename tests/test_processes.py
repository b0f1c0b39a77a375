"""Real processes at once, and real signals at random moments.

- Two translations into one output at once: the output is one run's complete result.
- Two trainings into one folder: the second is refused naming the first's pid, and the
  first finishes unharmed.
- SIGINT and SIGTERM at random moments of translate, evaluate, average and train (over
  several seeds): one line on stderr and 130 or 143 (or, if the signal came after the
  work, a normal end), no temporary file, each output either as it was or complete; an
  interrupted training resumed with --resume ends with the parameters of an unbroken
  run, as a killed one does (tests/test_faults.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmt import cli
from nmt.training.run_dir import LOCK
from nmt.training.train import train
from tests.conftest import make_pairs, tiny_config
from tests.test_faults import (
    KILL_RUN,
    assert_same_parameters,
    logged_steps,
    run_until,
    train_args,
)

ROOT = Path(__file__).resolve().parents[1]
OLD = b"the old contents\n"


def start(args: list[str]) -> subprocess.Popen:
    """`nmt -q ARGS` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "nmt", *([] if args[0] == "-q" else ["-q"]), *args]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)


def wait_until_handled(process: subprocess.Popen, timeout: float = 60) -> None:
    """Until `nmt.cli.main` has installed its signal handlers (SIGTERM among the
    signals the process catches, /proc/PID/status), or the process ended: a signal
    before that meets Python's own start-up, not nmt."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with open(f"/proc/{process.pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.005)


def interrupt(args: list[str], delay: float, signum: int) -> tuple[int, str]:
    """Runs `nmt ARGS`, sends `signum` `delay` seconds after its handlers are in place
    -> (exit status, stderr)."""
    process = start(args)
    wait_until_handled(process)
    time.sleep(delay)
    if process.poll() is None:
        process.send_signal(signum)
    _, err = process.communicate(timeout=300)
    return process.returncode, err.decode()


def assert_ended_cleanly(status: int, err: str, signum: int) -> None:
    """Interrupted (one line, 128 + the signal) or done before the signal (0)."""
    if status == 0:
        return
    assert status == 128 + signum, err
    assert err.count("\n") == 1 and err.startswith("nmt: interrupted"), err


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sources") / "src.de"
    path.write_text("".join(s + "\n" for s, _ in make_pairs(300, seed=21)), encoding="utf-8")
    return path


def translated(run: Path, source: Path) -> bytes:
    """What `nmt translate` writes for `source`, from an uninterrupted run."""
    out = source.with_name(f"expected-{source.name}")
    cli.main(["-q", "translate", str(run), "-i", str(source), "-o", str(out)])
    return out.read_bytes()


@pytest.fixture(scope="module")
def translation(trained_run, source) -> bytes:
    return translated(trained_run, source)


@pytest.fixture(scope="module")
def evaluation(trained_run, source) -> tuple[list[str], tuple[bytes, bytes]]:
    """evaluate's arguments (translate, then score), and its two outputs uninterrupted."""
    folder = source.parent / "evaluation"
    folder.mkdir()
    ref = folder / "ref.en"
    ref.write_text("".join(t + "\n" for _, t in make_pairs(300, seed=21)), encoding="utf-8")
    report, hyps = folder / "report.json", folder / "hyps.en"
    args = ["evaluate", "--model", str(trained_run), "--src", str(source), "--ref", str(ref)]
    args += ["-o", str(report), "--translations", str(hyps), "--metrics", "bleu"]
    cli.main(["-q", *args])
    return args, (report.read_bytes(), hyps.read_bytes())


def test_two_translations_into_one_output_give_one_complete_result(trained_run, source, tmp_path):
    other = tmp_path / "other.de"
    other.write_text("".join(s + "\n" for s, _ in make_pairs(200, seed=22)), encoding="utf-8")
    expected = {translated(trained_run, s) for s in (source, other)}
    out = tmp_path / "out.en"
    out.write_bytes(OLD)

    both = [
        start(["translate", str(trained_run), "-i", str(s), "-o", str(out)])
        for s in (source, other)
    ]
    for process in both:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()

    assert out.read_bytes() in expected, "a mixture of both"
    assert not temporaries(tmp_path)


def test_a_second_training_into_a_running_folder_is_refused_and_the_first_unharmed(
    toy_corpus, tmp_path, capsys
):
    run = tmp_path / "run"
    first = start(train_args(toy_corpus, run, *KILL_RUN))
    deadline = time.monotonic() + 120
    while logged_steps(run) < 2 and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    for resume in ([], ["--resume"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(train_args(toy_corpus, run, *KILL_RUN, "train.seed=5") + resume)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1
        assert f"is in use by another nmt train (pid {first.pid} " in err

    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, 41))
    assert "seed: 1234" in (run / "config.yaml").read_text()  # the first's, not seed 5
    assert (run / LOCK).read_text().startswith(f"pid {first.pid} ")


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_translate_interrupted_at_random_moments(trained_run, source, translation, tmp_path, seed):
    rng, out = random.Random(seed), tmp_path / "out.en"
    out.write_bytes(OLD)
    signum = rng.choice([signal.SIGINT, signal.SIGTERM])

    status, err = interrupt(
        ["translate", str(trained_run), "-i", str(source), "-o", str(out)],
        rng.uniform(0, 3.0),
        signum,
    )

    assert_ended_cleanly(status, err, signum)
    assert out.read_bytes() == (translation if status == 0 else OLD)
    assert not temporaries(tmp_path)


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_interrupted_at_random_moments(evaluation, seed):
    rng, (args, expected) = random.Random(seed), evaluation
    report, hyps = Path(args[args.index("-o") + 1]), Path(args[args.index("--translations") + 1])
    report.write_bytes(OLD), hyps.write_bytes(OLD)
    signum = rng.choice([signal.SIGINT, signal.SIGTERM])

    status, err = interrupt(args, rng.uniform(0, 3.0), signum)

    assert_ended_cleanly(status, err, signum)
    for path, complete in zip((report, hyps), expected, strict=True):
        assert path.read_bytes() in (OLD, complete)  # the translations may be done first
    if status == 0:
        assert (report.read_bytes(), hyps.read_bytes()) == expected
    assert not temporaries(report.parent)


@pytest.mark.parametrize("seed", SEEDS)
def test_average_interrupted_at_random_moments(trained_run, tmp_path, seed):
    rng, out = random.Random(seed), tmp_path / "avg.pt"
    args = ["average", str(trained_run / "last.pt"), str(trained_run / "best.pt"), "-o", str(out)]
    cli.main(["-q", *args])
    expected = torch.load(out, weights_only=True)["model"]
    out.write_bytes(OLD)
    signum = rng.choice([signal.SIGINT, signal.SIGTERM])

    status, err = interrupt(args, rng.uniform(0, 1.5), signum)

    assert_ended_cleanly(status, err, signum)
    if status == 0:
        got = torch.load(out, weights_only=True)["model"]
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    else:
        assert out.read_bytes() == OLD
    assert not temporaries(tmp_path, trained_run)


def test_training_interrupted_at_random_moments_resumes_to_the_unbroken_result(
    toy_corpus, tmp_path
):
    unbroken, stopped = tmp_path / "unbroken", tmp_path / "stopped"
    train(tiny_config(toy_corpus, *KILL_RUN, "train.threads=1"), unbroken)

    rng = random.Random(11)
    # a signal after a random step; the last round sends two at once: stop at once
    rounds = [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)]
    for signum, signals in rounds:
        resume = ["--resume"] if (stopped / "config.yaml").exists() else []
        process = start(train_args(toy_corpus, stopped, *KILL_RUN) + resume)
        run_until(process, stopped, logged_steps(stopped) + rng.randint(2, 8), rng)
        for _ in range(signals):
            process.send_signal(signum)
        _, err = process.communicate(timeout=120)
        err = err.decode()

        assert process.returncode == 128 + signum, err
        assert err.count("\n") == 1 and err.startswith("nmt: interrupted at step "), err
        assert f"`nmt train --resume --out {stopped}` continues" in err
        step = int(err.split("interrupted at step ")[1].split(":")[0])
        saved = torch.load(stopped / "last.pt", weights_only=True)["state"]["progress"]["step"]
        assert saved == step if signals == 1 else saved <= step  # the first saves where it stops
        assert not temporaries(stopped)

    train(None, stopped, resume=True)
    assert_same_parameters(unbroken / "last.pt", stopped / "last.pt")
    events = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, 41))


def test_signals_a_process_was_started_to_ignore_stay_ignored(
    trained_run, source, translation, tmp_path
):
    """`nohup nmt ...` and `nmt ... &` in a script ignore SIGHUP and SIGINT: so does nmt."""
    out = tmp_path / "out.en"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def ignore() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    args = [sys.executable, "-m", "nmt", "-q", "translate", str(trained_run), "-i", str(source)]
    process = subprocess.Popen(
        [*args, "-o", str(out)], env=env, preexec_fn=ignore, stderr=subprocess.PIPE
    )
    wait_until_handled(process)
    for signum in (signal.SIGHUP, signal.SIGINT):
        process.send_signal(signum)
    _, err = process.communicate(timeout=300)

    assert process.returncode == 0, err.decode()
    assert out.read_bytes() == translation

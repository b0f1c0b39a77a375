"""A run directory: opened new or for resuming under a lock held for the run's life,
what a resumed run may change, and the files that describe the run (config.yaml, the
SentencePiece models).

`--out` must be new, empty or a run (then only with `--resume`), so training never
writes into a folder of the user's; in a run folder it writes only its own files
(`run_files`), and leaves anything else there alone. A second `nmt train` into a folder
whose run is going is refused, naming the first one's process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import shlex
import socket
from pathlib import Path
from typing import IO

import yaml

from nmt.config import Config
from nmt.errors import NmtError
from nmt.interrupts import Interrupted
from nmt.outputs import OutputError, is_temporary, write_output
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)

LOCK = ".nmt-train.lock"  # who holds the run: flock'ed for the run's life, its pid inside
# what training writes into a run directory, and nothing else
RUN_FILES = ("config.yaml", "src.model", "tgt.model", "last.pt", "best.pt", "metrics.jsonl", LOCK)
STEP_CHECKPOINT = re.compile(r"step-(\d+)\.pt")  # train.keep_last's: step-1200.pt
TENSORBOARD = "tensorboard"


class RunError(NmtError):
    """A run directory that cannot be started or resumed as asked."""


def run_files(directory: Path) -> list[Path]:
    """The files training wrote in `directory` (those of `RUN_FILES` and the kept step
    checkpoints there, TensorBoard's folder): never an output of another command."""
    ours = [directory / name for name in RUN_FILES]
    ours += kept_checkpoints(directory)
    ours += [p for p in (directory / TENSORBOARD).rglob("*") if p.is_file()]
    return [p for p in ours if p.is_file()]


def kept_checkpoints(directory: Path) -> list[Path]:
    """The step checkpoints `train.keep_last` kept in `directory`, oldest first."""
    steps = []
    with contextlib.suppress(OSError):
        for path in directory.iterdir():
            if match := STEP_CHECKPOINT.fullmatch(path.name):
                steps.append((int(match[1]), path))
    return [path for _, path in sorted(steps)]


def is_run(directory: Path) -> bool:
    """Whether `directory` holds a run: one `nmt train` started (its lock and config),
    or, from before the lock existed, one with all of a run's files and a checkpoint."""
    if (directory / LOCK).is_file():
        return (directory / "config.yaml").is_file()
    return all((directory / name).is_file() for name in RUN_FILES[:4])


class RunLock:
    """An exclusive `flock` on the run's lock file, with this process's id inside; the
    kernel lets it go when the process ends, however it ends. `created`: this process
    made the directory, so a run that fails before writing anything takes it away again."""

    def __init__(self, directory: Path, created: bool = False):
        self.directory, self.created = directory, created
        path = directory / LOCK
        try:
            self.file: IO | None = open(path, "a+", encoding="utf-8")
        except OSError as err:
            raise RunError(f"cannot write to run directory {directory}: {err.strerror}") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunError(
                f"{directory} is in use by another nmt train ({holder}): wait for it to "
                "end, or choose another --out"
            ) from None
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.file.flush()

    def release(self) -> None:
        """Lets the run go; a run that wrote nothing leaves nothing (not even its lock)."""
        if self.file is None:
            return
        with contextlib.suppress(OSError):  # still holding it: no other train is inside
            if [p.name for p in self.directory.iterdir()] == [LOCK]:
                (self.directory / LOCK).unlink()
                if self.created:
                    self.directory.rmdir()
        self.file.close()  # closing the last descriptor releases the flock
        self.file = None


def open_run(cfg, out_dir: Path, resume: bool, overrides) -> tuple[str, Config, RunLock]:
    """-> ("new", config, lock) or ("resume", None or the config given, lock): what to do
    with the run directory, which this process now holds until `lock.release()`."""
    created = False
    if not (out_dir / LOCK).is_file():
        _check_out(out_dir, resume)  # before creating the lock: never a file in a user's folder
        created = not out_dir.exists()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot write to run directory {out_dir}: {err.strerror}") from None
    lock = RunLock(out_dir, created)
    try:
        _check_out(out_dir, resume)  # again, holding it: another train may have started it
        _remove_stale_temporaries(out_dir)
        return (*_mode(cfg, out_dir, resume, overrides), lock)
    except BaseException:
        lock.release()
        raise


def _check_out(out_dir: Path, resume: bool) -> None:
    """`--out` is new, empty or a run; a run only with `--resume`, and `--resume` a run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file: name a new or empty directory, or a run")
    if not out_dir.is_dir():
        if resume:
            raise RunError(f"cannot resume: {out_dir} does not exist")
        return
    if is_run(out_dir):
        if not resume:
            raise RunError(f"{out_dir} already holds a run: pass --resume, or choose another --out")
        return
    others = sorted(
        p.name for p in out_dir.iterdir() if p.name != LOCK and not is_temporary(p.name)
    )
    if others:
        listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise RunError(
            f"{out_dir} holds files that are not a run ({listed}): choose a new or empty --out"
        )
    if resume:
        raise RunError(f"cannot resume: {out_dir} holds no run")


def _mode(cfg, out_dir: Path, resume: bool, overrides) -> tuple[str, Config | None]:
    last = out_dir / "last.pt"
    if not resume:
        return "new", cfg
    if last.exists():
        return "resume", cfg  # the run's own config is last.pt's, read by every rank
    # stopped before its first checkpoint: start again from its own config
    log.warning("%s holds no checkpoint yet: starting the run from step 0", out_dir)
    return "new", cfg or Config.from_yaml(out_dir / "config.yaml", overrides)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """The half-written files of a run killed with -9 (`nmt.outputs`' temporary files of
    the run's own files): no other process writes here while the lock is held."""
    for path in out_dir.iterdir():
        name = path.name.removeprefix(".")
        own = any(name.startswith(f"{own}.") for own in RUN_FILES) or name.startswith("step-")
        if is_temporary(path.name) and own:
            with contextlib.suppress(OSError):
                path.unlink()


def interrupted(signum: int, out_dir: Path, step: int | None, saved: int | None) -> Interrupted:
    """Ctrl-C or SIGTERM at `step` (None: before the first), with last.pt at `saved`
    (None: none yet), said in one line with the command that continues the run."""
    resume = f"`nmt train --resume --out {shlex.quote(str(out_dir))}`"
    if step is None:
        if is_run(out_dir):
            return Interrupted(signum, f"interrupted before the first step: {resume} starts it")
        return Interrupted(signum, "interrupted before the run began")
    if saved == step:
        return Interrupted(signum, f"interrupted at step {step}: {resume} continues")
    return Interrupted(
        signum, f"interrupted at step {step}: {resume} continues from step {saved or 0}"
    )


# what a resumed run may change besides train.* and decode.*: the rest of model.* and data.*
# fixes the weights' shapes, the vocabularies and the batches the checkpoint was made with
RESUMABLE_DATA = ("valid", "test", "cache_dir", "num_proc")


def changed_settings(run_cfg: Config, cfg: Config) -> list[str]:
    """The keys a resumed run changes; a RunError for one it may not change."""
    changed = []
    for section in ("data", "model", "train", "decode"):
        new = dataclasses.asdict(getattr(cfg, section))
        for name, value in dataclasses.asdict(getattr(run_cfg, section)).items():
            if value == new[name]:
                continue
            if section == "model" or (section == "data" and name not in RESUMABLE_DATA):
                raise RunError(
                    f"{section}.{name} cannot change on --resume: the checkpoint's shapes, "
                    "vocabularies and batches depend on it; train a new run (another --out)"
                )
            changed.append(f"{section}.{name}={new[name]}")
    return changed


def write_run_files(out_dir: Path, cfg: Config, tokenizers: tuple[Tokenizer, Tokenizer]) -> None:
    """config.yaml (with the vocabulary size the run really has: SentencePiece builds
    fewer pieces than asked from a small corpus) and the SentencePiece models."""
    built = max(len(t) for t in tokenizers)
    used = cfg.to_dict()
    note = ""
    if built < cfg.data.vocab_size:
        used["data"]["vocab_size"] = built
        sizes = f"src {len(tokenizers[0])}, tgt {len(tokenizers[1])}"
        note = (
            f"# data.vocab_size: {cfg.data.vocab_size} was asked; SentencePiece built {built} "
            f"pieces from this corpus ({sizes})\n"
        )
        log.info("vocabulary: %d pieces asked, %d built (%s)", cfg.data.vocab_size, built, sizes)
    try:
        write_output(out_dir / "config.yaml", note + yaml.safe_dump(used, sort_keys=False))
        write_output(out_dir / "src.model", tokenizers[0].model_bytes)
        write_output(out_dir / "tgt.model", tokenizers[1].model_bytes)
    except OutputError as err:
        raise RunError(f"cannot write to run directory {out_dir}: {err.reason}") from None

"""A run directory: opened new or for resuming, what a resumed run may change, and the
files that describe the run (config.yaml, the SentencePiece models)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml

from nmt.config import Config
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class RunError(NmtError):
    """A run directory that cannot be started or resumed as asked."""


def open_run(cfg, out_dir: Path, resume: bool, overrides) -> tuple[str, Config]:
    """-> ("new", config) or ("resume", None): what to do with the run directory."""
    last = out_dir / "last.pt"
    if resume:
        if last.exists():
            return "resume", cfg  # the run's own config is last.pt's, read by every rank
        if not (out_dir / "config.yaml").is_file():
            raise RunError(f"cannot resume: {last} does not exist")
        # stopped before its first checkpoint: start again from its own config
        log.warning("%s holds no checkpoint yet: starting the run from step 0", out_dir)
        return "new", cfg or Config.from_yaml(out_dir / "config.yaml", overrides)
    if last.exists():
        raise RunError(f"{out_dir} already holds a run: pass --resume, or choose another --out")
    _check_writable(out_dir)  # before minutes of SentencePiece training, not after
    return "new", cfg


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


def _check_writable(out_dir: Path) -> None:
    probe = out_dir / ".write-test"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunError(f"cannot write to run directory {out_dir}: {err.strerror or err}") from None


def write_run_files(out_dir: Path, cfg: Config, tokenizers: tuple[Tokenizer, Tokenizer]) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (out_dir / "src.model").write_bytes(tokenizers[0].model_bytes)
        (out_dir / "tgt.model").write_bytes(tokenizers[1].model_bytes)
    except OSError as err:
        raise RunError(f"cannot write to run directory {out_dir}: {err.strerror or err}") from None

"""Self-contained checkpoints: config, SentencePiece models, weights and training state.

One `.pt` file rebuilds the model and its tokenizers anywhere. Files are written
atomically (`nmt.outputs`: temp file, fsync, rename) and read with
`torch.load(weights_only=True)`, so a checkpoint can never run code. A run's `last.pt`
also holds all resuming needs: the `Progress`, the optimizer and scaler, every rank's
random generator.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nmt.config import Config, ConfigError, ModelConfig, NmtError
from nmt.model import Seq2Seq
from nmt.outputs import OutputError, write_output
from nmt.plan import Plan
from nmt.tokenizer import PAD, Tokenizer

log = logging.getLogger(__name__)

FORMAT = "nmt-checkpoint-1"


class CheckpointError(NmtError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""


def save(path: Path, *, cfg: Config, model: Seq2Seq, tokenizers, state: dict | None = None):
    """`tokenizers`: (src, tgt); `state`: what resuming needs (`training_state`)."""
    spm = [torch.frombuffer(bytearray(t.model_bytes), dtype=torch.uint8) for t in tokenizers]
    payload = {"format": FORMAT, "config": cfg.to_dict(), "spm": spm}
    _write(path, {**payload, "model": model.state_dict(), "state": state or {}})


def _write(path: Path, payload: dict[str, Any]) -> None:
    """Serialized in memory, then written by `nmt.outputs`' rules: a crash or a full disk
    at any moment leaves the previous checkpoint whole, and the disk's own error is the
    one reported (torch's file writer reports it as an "enforce fail")."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_output(path, buffer.getbuffer())
    except (OSError, OutputError) as err:
        kept = f"{path.name} still holds the previous checkpoint" if path.is_file() else ""
        reason = err.reason if isinstance(err, OutputError) else err.strerror or str(err)
        raise CheckpointError(
            f"cannot write checkpoint {path}: {reason}; " + (kept or "no checkpoint was written")
        ) from None


def load(path: Path, device: str | torch.device = "cpu") -> tuple[Config, Seq2Seq, tuple, dict]:
    """-> config, model (in eval mode), (src, tgt) tokenizers and the training state."""
    ckpt = _read(path, device)
    try:
        cfg = Config.from_dict(ckpt["config"])
        tokenizers = tuple(Tokenizer(bytes(t.cpu().numpy().tobytes())) for t in ckpt["spm"])
        model = Seq2Seq(cfg.model, len(tokenizers[0]), len(tokenizers[1]), pad=PAD)
        model.load_state_dict(ckpt["model"])
    except ConfigError as err:
        raise CheckpointError(f"{path} has an invalid config: {err}") from None
    except (
        KeyError,
        TypeError,
        AttributeError,
        RuntimeError,
    ) as err:  # what a foreign payload raises
        raise CheckpointError(
            f"{path} is marked as an nmt checkpoint but its contents are not one "
            f"({type(err).__name__}: {str(err).splitlines()[0][:120]})"
        ) from None
    return cfg, model.to(device).eval(), tokenizers, ckpt["state"]


def average(paths: list[Path], out: Path) -> None:
    """Writes the parameter average of checkpoints of one model (last-k averaging), with
    the first one's config and tokenizers and no training state: for translating."""
    ckpts = [_read(p) for p in paths]
    first, shapes = ckpts[0], {k: v.shape for k, v in ckpts[0]["model"].items()}
    for path, ckpt in zip(paths[1:], ckpts[1:], strict=True):
        same_spm = all(torch.equal(a, b) for a, b in zip(ckpt["spm"], first["spm"], strict=True))
        same = _model_config(ckpt) == _model_config(first) and same_spm
        if not same or {k: v.shape for k, v in ckpt["model"].items()} != shapes:
            raise CheckpointError(f"{path} holds another model than {paths[0]}: cannot average")
    weights = {
        name: (sum(c["model"][name].double() for c in ckpts) / len(ckpts)).to(tensor.dtype)
        for name, tensor in first["model"].items()
    }
    _write(out, {**first, "model": weights, "state": {}})


def _model_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's model config with the defaults of keys added since it was saved
    (a checkpoint from before model.decoder existed holds the stacked decoder)."""
    return {**dataclasses.asdict(ModelConfig()), **ckpt["config"]["model"]}


def _read(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's payload, loaded without ever running code from the file."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":  # torch.save's zip archive, or a pickle
        raise CheckpointError(f"{path} is not a checkpoint: not a file that torch.save writes")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not a safe nmt checkpoint: it holds Python objects besides tensors "
            "and plain data, which nmt never writes; refused without loading them"
        ) from None
    except Exception as err:  # a broken archive fails in many ways inside torch
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is truncated or not a checkpoint: {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nmt checkpoint")
    kinds = {"config": dict, "spm": list, "model": dict, "state": dict}
    if not all(isinstance(ckpt.get(key), kind) for key, kind in kinds.items()):
        raise CheckpointError(f"{path} is marked as an nmt checkpoint but is not one: damaged?")
    return ckpt


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


def save_run(out_dir: Path, cfg: Config, model, tokenizers, *, state: dict, best: bool) -> None:
    """`last.pt` with the training `state`, and `best.pt` too if `best`: for translating,
    not resuming, a third of last.pt without Adam's moments."""
    common = dict(cfg=cfg, model=model, tokenizers=tokenizers)
    save(out_dir / "last.pt", **common, state=state)
    if best:
        save(out_dir / "best.pt", **common, state={"progress": state["progress"]})


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
        scaler.load_state_dict(saved["scaler"])
    return progress

"""Self-contained checkpoints: config, SentencePiece models, weights and training state.

One `.pt` file rebuilds the model and its tokenizers anywhere. Files are written
atomically (`nmt.outputs`: temp file, fsync, rename) and read with
`torch.load(weights_only=True)`, so a checkpoint can never run code. A run's `last.pt`
also holds what resuming needs (`nmt.training.state`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import torch

from nmt.config import Config, ConfigError, ModelConfig
from nmt.errors import NmtError
from nmt.model import Seq2Seq
from nmt.outputs import OutputError, write_output
from nmt.tokenizer import PAD, Tokenizer

log = logging.getLogger(__name__)

FORMAT = "nmt-checkpoint-1"


class CheckpointError(NmtError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""


def save(path: Path, *, cfg: Config, model: Seq2Seq, tokenizers, state: dict | None = None):
    """`tokenizers`: (src, tgt); `state`: what resuming needs (`nmt.training.state`)."""
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


class Loaded(NamedTuple):
    """What a checkpoint holds."""

    cfg: Config
    model: Seq2Seq  # in eval mode, on the device asked for
    tokenizers: tuple[Tokenizer, Tokenizer]  # (src, tgt)
    state: dict  # what resuming needs ({} in best.pt and averages): nmt.training.state


def load(path: Path, device: str | torch.device = "cpu") -> Loaded:
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
    return Loaded(cfg, model.to(device).eval(), tokenizers, ckpt["state"])


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

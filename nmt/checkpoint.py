"""Self-contained checkpoints: config, SentencePiece models, weights and training state.

One `.pt` file is enough to rebuild the model and its tokenizers anywhere. Files
are written atomically (temp file, fsync, rename) and read with
`torch.load(weights_only=True)`, so a checkpoint can never run code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from nmt.config import Config, ConfigError
from nmt.model import Seq2Seq
from nmt.tokenizer import PAD, Tokenizer

FORMAT = "nmt-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""


def save(
    path: Path,
    *,
    cfg: Config,
    model: Seq2Seq,
    tokenizers: tuple[Tokenizer, Tokenizer],
    state: dict[str, Any] | None = None,
) -> None:
    """`state` holds what resuming needs (optimizer, schedule, RNG, position)."""
    payload = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "spm": [_bytes_tensor(tok.model_bytes) for tok in tokenizers],
        "model": model.state_dict(),
        "state": state or {},
    }
    _write(path, payload)


def _write(path: Path, payload: dict[str, Any]) -> None:
    """Writes a temp file, reads it back, then renames it over `path`: a crash or a
    full disk at any moment leaves the previous checkpoint whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        # the load check: its archive and records parse (tensors are mapped, not read)
        if torch.load(tmp, mmap=True, weights_only=True).get("format") != FORMAT:
            raise OSError(f"{tmp} did not read back as a checkpoint")
        tmp.replace(path)
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        kept = f"{path.name} still holds the previous checkpoint" if path.exists() else ""
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise CheckpointError(
            f"cannot write checkpoint {path}: {reason}; " + (kept or "no checkpoint was written")
        ) from None


def load(path: Path, device: str | torch.device = "cpu") -> tuple[Config, Seq2Seq, tuple, dict]:
    """-> config, model (in eval mode), (src, tgt) tokenizers and the training state."""
    ckpt = _read(path, device)
    try:
        cfg = Config.from_dict(ckpt["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path} has an invalid config: {err}") from None
    tokenizers = tuple(Tokenizer(bytes(t.cpu().numpy().tobytes())) for t in ckpt["spm"])
    model = Seq2Seq(cfg.model, len(tokenizers[0]), len(tokenizers[1]), pad=PAD)
    model.load_state_dict(ckpt["model"])
    return cfg, model.to(device).eval(), tokenizers, ckpt["state"]


def average(paths: list[Path], out: Path) -> None:
    """Writes the parameter average of checkpoints of one model (last-k averaging).

    The result keeps the first checkpoint's config and tokenizers and no
    training state: it is for translating, not for resuming.
    """
    ckpts = [_read(p) for p in paths]
    first = ckpts[0]
    for path, ckpt in zip(paths[1:], ckpts[1:], strict=True):
        same_shapes = ckpt["model"].keys() == first["model"].keys() and all(
            ckpt["model"][k].shape == v.shape for k, v in first["model"].items()
        )
        same_spm = all(torch.equal(a, b) for a, b in zip(ckpt["spm"], first["spm"], strict=True))
        if ckpt["config"]["model"] != first["config"]["model"] or not same_shapes or not same_spm:
            raise CheckpointError(f"{path} holds another model than {paths[0]}: cannot average")
    weights = {
        name: (sum(c["model"][name].double() for c in ckpts) / len(ckpts)).to(tensor.dtype)
        for name, tensor in first["model"].items()
    }
    _write(out, {**first, "model": weights, "state": {}})


def _read(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's payload, loaded without ever running code from the file."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not a safe nmt checkpoint: {first}") from None
    except Exception as err:  # a broken file fails in many ways inside torch
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is truncated or not a checkpoint: {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nmt checkpoint")
    return ckpt


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()

"""Self-contained checkpoints: config, SentencePiece models, weights and training state.

One `.pt` file is enough to rebuild the model and its tokenizers anywhere. Files
are written atomically (temp file, fsync, rename) and read with
`torch.load(weights_only=True)`, so a checkpoint can never run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from nmt.config import Config, ConfigError
from nmt.model import Seq2Seq
from nmt.tokenizer import PAD, Tokenizer


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
        "format": "nmt-checkpoint-1",
        "config": cfg.to_dict(),
        "spm": [_bytes_tensor(tok.model_bytes) for tok in tokenizers],
        "model": model.state_dict(),
        "state": state or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)  # never leave a half-written checkpoint under the real name


def load(path: Path, device: str | torch.device = "cpu") -> tuple[Config, Seq2Seq, tuple, dict]:
    """-> config, model (in eval mode), (src, tgt) tokenizers and the training state."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not a safe nmt checkpoint: {first}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is truncated or not a checkpoint: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "nmt-checkpoint-1":
        raise CheckpointError(f"{path} is not an nmt checkpoint")
    try:
        cfg = Config.from_dict(ckpt["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path} has an invalid config: {err}") from None
    tokenizers = tuple(Tokenizer(bytes(t.cpu().numpy().tobytes())) for t in ckpt["spm"])
    model = Seq2Seq(cfg.model, len(tokenizers[0]), len(tokenizers[1]), pad=PAD)
    model.load_state_dict(ckpt["model"])
    return cfg, model.to(device).eval(), tokenizers, ckpt["state"]


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()

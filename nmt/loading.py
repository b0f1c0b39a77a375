"""Models to translate with: checkpoints loaded, checked to belong together, cast and
wrapped as the plan says (`nmt.runtime`), so that search runs what this machine runs
fastest while `Translator.model` stays the model as trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from nmt import checkpoint
from nmt.config import Config
from nmt.ensemble import Ensemble
from nmt.plan import Plan, plan_for, resolve_device
from nmt.runtime.graphs import CapturedDecoder, CudaGraphs
from nmt.runtime.prepared import PreparedModel
from nmt.tokenizer import Tokenizer


class Models(NamedTuple):
    """`Translator`'s arguments, as `load` makes them."""

    model: object  # a Seq2Seq, or an Ensemble of them, in eval mode on the plan's device
    tokenizers: tuple[Tokenizer, Tokenizer]  # (src, tgt)
    cfg: Config  # the first model's; with the decode.* overrides asked for
    plan: Plan


def load(
    paths: str | Path | list,
    *,
    device: str = "auto",
    precision: str = "auto",
    graphs: bool = False,
    overrides: list[str] = (),
) -> Models:
    """From checkpoint files or run directories (their best.pt, else last.pt). Several
    paths make an ensemble; they must share their tokenizers. `overrides`: decode.*
    settings (`decode.beam_size=8`) over the checkpoint's. `graphs`: replay the decoder
    step as CUDA graphs (a CUDA device only)."""
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    device = resolve_device(device)
    loaded = [checkpoint.load(_checkpoint_file(p), device) for p in paths]
    tokenizers = loaded[0].tokenizers
    for path, other in zip(paths[1:], loaded[1:], strict=True):
        if [t.model_bytes for t in other.tokenizers] != [t.model_bytes for t in tokenizers]:
            raise checkpoint.CheckpointError(
                f"{path} uses other SentencePiece models than {paths[0]}: cannot ensemble"
            )
    cfg = loaded[0].cfg.replace(list(overrides)) if overrides else loaded[0].cfg
    # the models are ours: their weights may be prepared and cast
    options = {"prepared": True, "graphs": graphs}
    plan = plan_for(device, precision, training=False, model=cfg.model, **options)
    models = [one.model for one in loaded]
    if plan.weight_dtype:
        models = [model.to(plan.weight_dtype) for model in models]
    return Models(models[0] if len(models) == 1 else Ensemble(models), tokenizers, cfg, plan)


def wrap(model, plan: Plan):
    """What search runs: `model` itself, or wrappers with its interface where the plan
    prepares the decoder's weights or replays its step as CUDA graphs; the model itself
    is left as it is."""
    members = model.models if isinstance(model, Ensemble) else [model]
    decoders = members
    if plan.decoder_weights != "module":
        decoders = [PreparedModel(m, plan.decoder_weights) for m in decoders]
    if plan.graphs:  # each member's step its own graphs, in one memory pool
        capture = CudaGraphs()
        decoders = [CapturedDecoder(d, capture) for d in decoders]
    if decoders is members:
        return model
    return Ensemble(decoders) if isinstance(model, Ensemble) else decoders[0]


def _checkpoint_file(path: Path) -> Path:
    """A run directory's best.pt, else its last.pt; a file is itself."""
    if not path.is_dir():
        return path
    return next((p for p in (path / "best.pt", path / "last.pt") if p.exists()), path / "best.pt")

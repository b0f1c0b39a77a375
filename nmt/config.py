"""Typed, frozen configuration loaded from YAML with `section.key=value` overrides.

Every field has its default here and nowhere else. Unknown keys, wrong types and
invalid choices raise `ConfigError` naming the key (and the nearest valid name),
before any work starts. No torch in this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nmt import yaml_file
from nmt.errors import NmtError
from nmt.options import PRECISIONS, SEARCH, describe, within


class ConfigError(NmtError):
    """A bad key, type or value in a config file or override."""


@dataclass(frozen=True)
class DataConfig:
    src_lang: str = "de"
    tgt_lang: str = "en"
    # Each split is a Hub split name (when `hub` is set), a path prefix for
    # line-aligned files (`PREFIX.de` + `PREFIX.en`, plain or .gz), or a .tsv /
    # .jsonl file holding both sides.
    hub: str = ""  # Hugging Face dataset id, e.g. "bentrevett/multi30k"
    hub_config: str = ""  # e.g. "de-en" for the `translation: {de, en}` layout
    src_column: str = ""  # two-column layouts; default: the language codes
    tgt_column: str = ""
    train: str = "train"
    valid: str = "val"
    test: str = "test"
    max_len: int = 100  # subword pieces per side, longer training pairs are dropped
    max_ratio: float = 9.0  # drop training pairs whose piece-length ratio exceeds this
    vocab_size: int = 8000
    spm_model: str = "unigram"  # "unigram" | "bpe"
    joint_vocab: bool = True  # one SentencePiece model for both languages
    character_coverage: float = 1.0
    max_tokens: int = 2000  # padded tokens of the longer side per training batch
    num_proc: int = 1  # worker processes for `datasets.map`
    # Tokenized training splits are kept here as Arrow and reused by later runs and
    # other ranks with the same data and tokenizers; "" turns the cache off.
    cache_dir: str = "~/.cache/nmt"
    # Stream the training split instead of loading it: for corpora larger than memory.
    streaming: bool = False
    shuffle_buffer: int = 100_000  # streaming: pairs in the shuffle buffer
    sort_pool: int = 10_000  # streaming: pairs sorted by length together into batches
    spm_sample: int = 500_000  # streaming: SentencePiece learns from the first this many pairs

    ALLOWED: ClassVar = {
        **dict.fromkeys(("max_len", "vocab_size", "max_tokens", "num_proc"), "[1, inf)"),
        **dict.fromkeys(("shuffle_buffer", "sort_pool", "spm_sample"), "[1, inf)"),
        "max_ratio": "[1, inf)",
        "character_coverage": "(0, 1]",
        "spm_model": ("unigram", "bpe"),
    }

    def __post_init__(self):
        _check_values("data", self)
        if self.src_lang == self.tgt_lang:
            raise ConfigError(f"data.src_lang and data.tgt_lang are both {self.src_lang!r}")


@dataclass(frozen=True)
class ModelConfig:
    emb_dim: int = 256
    enc_hidden: int = 256  # per direction: encoder states are 2 * enc_hidden wide
    enc_layers: int = 1
    dec_hidden: int = 512
    dec_layers: int = 1
    attention: str = "general"  # "dot" | "general" (Luong) | "bahdanau" (additive)
    input_feed: bool = True  # feed the previous attentional vector to the decoder
    # "stacked": attend with the top layer, context into the output (and with bahdanau into
    # the bottom layer); "parallel" (GNMT's): the bottom layer's output attends and the
    # context joins the input of every upper layer, so that without input feeding each
    # layer runs over the whole target in one call in training
    decoder: str = "stacked"
    bridge: str = "linear"  # encoder final state -> decoder initial: "linear" | "copy" | "zero"
    dropout: float = 0.3
    tie_embeddings: bool = True  # decoder output layer shares the target embedding
    share_embeddings: bool = False  # source and target share one embedding (joint vocab)
    init_range: float = 0.1  # parameters start uniform in [-init_range, init_range]

    ALLOWED: ClassVar = {
        **dict.fromkeys(("emb_dim", "enc_hidden", "enc_layers", "dec_hidden"), "[1, inf)"),
        "dec_layers": "[1, inf)",
        "dropout": "[0, 1)",
        "init_range": "[0, inf)",
        "attention": ("dot", "general", "bahdanau"),
        "bridge": ("linear", "copy", "zero"),
        "decoder": ("stacked", "parallel"),
    }

    def __post_init__(self):
        _check_values("model", self)
        if self.decoder == "parallel" and (self.input_feed or self.dec_layers < 2):
            raise ConfigError(
                "model.decoder=parallel needs model.input_feed=false and model.dec_layers >= 2, "
                f"got input_feed={str(self.input_feed).lower()} and dec_layers={self.dec_layers}"
            )
        if self.attention == "dot" and 2 * self.enc_hidden != self.dec_hidden:
            raise ConfigError(
                "model.attention=dot needs model.dec_hidden == 2 * model.enc_hidden, "
                f"got {self.dec_hidden} and 2 * {self.enc_hidden}"
            )
        same = 2 * self.enc_hidden == self.dec_hidden and self.enc_layers == self.dec_layers
        if self.bridge == "copy" and not same:
            raise ConfigError("model.bridge=copy needs dec_hidden == 2 * enc_hidden, equal layers")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1234
    max_steps: int = 100_000
    max_epochs: int = 0  # 0: no limit
    max_time: float = 0.0  # seconds of training before stopping; 0: no limit
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "inverse_sqrt" | "plateau" (on val BLEU)
    warmup_steps: int = 0
    decay_factor: float = 0.5  # plateau: lr *= decay_factor after decay_patience bad evals
    decay_patience: int = 2
    min_lr: float = 1e-5
    clip_norm: float = 5.0  # on the gradient of the normalized loss (below)
    # The summed loss is divided by the batch's target tokens, or by its sentences as
    # OpenNMT-py does by default; with sentences the gradient is ~15x larger on Multi30k
    # and clip_norm binds where with tokens it never does (docs/benchmarks.md, loss)
    loss_normalization: str = "tokens"  # "tokens" | "sentences"
    label_smoothing: float = 0.1
    accum_steps: int = 1  # batches per optimizer step
    precision: str = "auto"  # "auto" | "fp32" | "fp16" | "bf16"
    threads: int = 0  # torch intra-op threads; 0: torch's default
    log_every: int = 50
    valid_every: int = 500  # validate and checkpoint (last.pt, best.pt) every this many steps
    # also keep the last this many checkpoints as step-N.pt (for `nmt average RUN`); 0: none
    keep_last: int = 0
    patience: int = 0  # stop after this many validations without a better BLEU; 0: never
    # Stop after this many steps in a row with a non-finite loss or gradient (each is
    # skipped). fp16 skips a few while its loss scale settles: keep this well above that.
    # Counted on the device and read every log_every steps, so the stop can come later.
    max_nonfinite: int = 20
    valid_batch_tokens: int = 6000  # source tokens per validation decoding batch
    # Pad each batch's rows, source and target length up to a few bucket sizes
    # (nmt.plan.bucket) so that step shapes recur; "auto": with cuda_graphs and
    # data.streaming (in memory, each epoch cuts the same shapes already: nmt.plan.plan_for)
    static_shapes: str = "auto"  # "auto" | "always" | "never" (YAML reads on/off as booleans)
    # Replay the loss's forward and backward as CUDA graphs captured per batch shape
    # (GPU only, one process): nmt.runtime.captured_loss
    cuda_graphs: bool = False

    ALLOWED: ClassVar = {
        **dict.fromkeys(("max_steps", "accum_steps", "log_every", "valid_every"), "[1, inf)"),
        **dict.fromkeys(("max_nonfinite", "valid_batch_tokens", "decay_patience"), "[1, inf)"),
        **dict.fromkeys(("seed", "max_epochs", "warmup_steps", "threads", "patience"), "[0, inf)"),
        "keep_last": "[0, inf)",
        **dict.fromkeys(("max_time", "weight_decay", "min_lr"), "[0, inf)"),
        **dict.fromkeys(("lr", "clip_norm"), "(0, inf)"),
        **dict.fromkeys(("betas", "label_smoothing"), "[0, 1)"),
        "decay_factor": "(0, 1)",
        "optimizer": ("adam", "adamw"),
        "schedule": ("constant", "inverse_sqrt", "plateau"),
        "precision": tuple(p for p in PRECISIONS if p != "int8"),
        "static_shapes": ("auto", "always", "never"),
        "loss_normalization": ("tokens", "sentences"),
    }

    def __post_init__(self):
        _check_values("train", self)
        if self.schedule == "inverse_sqrt" and self.warmup_steps <= 0:
            raise ConfigError("train.schedule=inverse_sqrt needs train.warmup_steps > 0")


@dataclass(frozen=True)
class DecodeConfig:
    beam_size: int = 5
    alpha: float = 0.0  # GNMT length penalty exponent; 0 ranks by raw log-probability
    max_len_a: float = 1.5  # output length limit: a * source length + b pieces
    max_len_b: int = 10
    max_tokens: int = 6000  # source tokens per translation batch
    beta: float = 0.0  # GNMT coverage penalty weight; 0: off
    min_len: int = 1  # shortest output in pieces, EOS included
    no_repeat_ngram: int = 0  # never repeat an n-gram of this size; 0: off
    replace_unk: bool = False  # replace <unk> outputs by the source piece they attend to

    ALLOWED: ClassVar = {
        "beam_size": SEARCH["beam"].bounds,  # a call's options may override these three
        "alpha": SEARCH["alpha"].bounds,
        "max_tokens": SEARCH["max_tokens"].bounds,
        "min_len": "[1, inf)",
        **dict.fromkeys(("beta", "max_len_a", "max_len_b", "no_repeat_ngram"), "[0, inf)"),
    }

    def __post_init__(self):
        _check_values("decode", self)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
        path = Path(path)
        raw = yaml_file.read(path, ConfigError)
        if raw is None:  # its defaults would name no data
            raise ConfigError(f"config file {path} is empty")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
        try:
            _check_sections(raw)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        return cls.from_dict(apply_overrides(raw, overrides))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        """`raw`: sections by name, each a mapping of keys (or empty: the defaults)."""
        _check_sections(raw)
        sections = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        built = {name: _build(make, name, raw.get(name) or {}) for name, make in sections.items()}
        return cls(**built)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain types only (lists, not tuples) so it round-trips through YAML and torch.save."""
        return {
            section.name: {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(getattr(self, section.name)).items()
            }
            for section in dataclasses.fields(self)
        }

    def replace(self, overrides: typing.Sequence[str]) -> Config:
        return Config.from_dict(apply_overrides(self.to_dict(), overrides))


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Applies "section.key=value" strings; values are parsed as YAML scalars or lists."""
    _check_sections(raw)
    raw = {name: dict(values or {}) for name, values in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        section, leaf = parts
        raw.setdefault(section, {})[leaf] = yaml_file.scalar(text)
    return raw


def _check_sections(raw: dict[str, Any]) -> None:
    """Each top-level name a section, and each section a mapping of keys (or empty: null);
    a key of a section written at the top level is named with its section."""
    sections = {f.name: f.default_factory for f in dataclasses.fields(Config)}
    for name, values in raw.items():
        if name not in sections:
            owners = [s for s, make in sections.items() if name in typing.get_type_hints(make)]
            if owners:
                raise ConfigError(
                    f"{name!r} is a key of section {owners[0]!r}, not a section: "
                    f"write it under '{owners[0]}:' (or as {owners[0]}.{name}=...)"
                )
            raise ConfigError(f"unknown config section {name!r}{_nearest(name, sections)}")
        if values is not None and not isinstance(values, dict):
            raise ConfigError(
                f"config section {name!r} must be a mapping of keys, got {values!r} "
                f"({type(values).__name__})"
            )


def _build(make: type, section: str, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(make)
    names = [f.name for f in dataclasses.fields(make)]
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown config key '{section}.{key}'{_nearest(key, names)}")
        checked[key] = _check_type(f"{section}.{key}", value, hints[key])
    return make(**checked)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Returns the value converted to the field's type, or raises naming the key."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        item_types = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise ConfigError(f"config key '{key}' expects a list of {len(item_types)} numbers")
        return tuple(_check_type(key, v, t) for v, t in zip(value, item_types, strict=True))
    if hint is float and isinstance(value, str):
        value = _yaml11_float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise ConfigError(
            f"config key '{key}' expects {hint.__name__}, got {value!r} ({type(value).__name__})"
        )
    return float(value) if hint is float else value


def _yaml11_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _check_values(section: str, obj: Any) -> None:
    """Every number of a section finite, and every value among its field's `ALLOWED`:
    an interval ("[0, 1)") of numbers, or a tuple of choices."""
    for name, value in dataclasses.asdict(obj).items():
        key, allowed = f"{section}.{name}", obj.ALLOWED.get(name)
        if isinstance(allowed, tuple) and value not in allowed:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(allowed)}; got {value!r}"
                f"{_nearest(value, allowed)}"
            )
        for number in value if isinstance(value, tuple) else [value]:
            if isinstance(number, float) and not math.isfinite(number):
                raise ConfigError(f"config key '{key}' must be finite, got {number}")
            if isinstance(allowed, str) and not within(number, allowed):
                raise ConfigError(f"config key '{key}' must be {describe(allowed)}, got {value}")


def _nearest(word: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

"""Small data made by the tests themselves: a word-level toy language pair."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

import nmt.config
from nmt.plan import DTYPES, plan_for
from nmt.training.optimize import TrainingLoss, train_step

WORDS = {  # "German" -> "English"
    "der": "the",
    "hund": "dog",
    "katze": "cat",
    "läuft": "runs",
    "springt": "jumps",
    "ein": "a",
    "mann": "man",
    "frau": "woman",
    "sieht": "sees",
    "rot": "red",
    "blau": "blue",
    "ball": "ball",
    "im": "in the",
    "park": "park",
    "haus": "house",
    "kind": "child",
    "spielt": "plays",
    "mit": "with",
    "groß": "big",
    "klein": "small",
}


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    german = sorted(WORDS)
    pairs = []
    for _ in range(n):
        words = [rng.choice(german) for _ in range(rng.randint(2, 7))]
        pairs.append((" ".join(words).capitalize() + ".", " ".join(WORDS[w] for w in words) + "."))
    return pairs


def write_split(prefix: Path, pairs: list[tuple[str, str]]) -> None:
    prefix.with_name(prefix.name + ".de").write_text("".join(s + "\n" for s, _ in pairs))
    prefix.with_name(prefix.name + ".en").write_text("".join(t + "\n" for _, t in pairs))


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory) -> Path:
    """A directory with train.{de,en} (400 pairs) and val.{de,en} (40 pairs)."""
    root = tmp_path_factory.mktemp("toy")
    write_split(root / "train", make_pairs(400, seed=1))
    write_split(root / "val", make_pairs(40, seed=2))
    return root


TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def tiny_overrides(corpus: Path) -> list[str]:
    """What points configs/tiny.yaml at the toy corpus (and a cache beside it)."""
    return [
        f"data.train={corpus / 'train'}",
        f"data.valid={corpus / 'val'}",
        f"data.test={corpus / 'val'}",
        "data.vocab_size=80",
        f"data.cache_dir={corpus.parent / 'cache'}",
    ]


def tiny_config(corpus: Path, *overrides: str) -> nmt.config.Config:
    """configs/tiny.yaml pointed at the toy corpus."""
    return nmt.config.Config.from_yaml(TINY, [*tiny_overrides(corpus), *overrides])


def tiny_train_args(corpus: Path, *overrides: str) -> list[str]:
    """`nmt train` arguments for configs/tiny.yaml on the toy corpus (add --out)."""
    return ["train", str(TINY), *tiny_overrides(corpus), *overrides]


@pytest.fixture(scope="session")
def trained_run(toy_corpus, tmp_path_factory) -> Path:
    """A small model trained on the toy corpus for a few seconds: it translates
    badly, but it produces words, attends and scores like a real one."""
    return _train_small(toy_corpus, tmp_path_factory.mktemp("trained") / "run")


PARALLEL_DECODER = ["model.decoder=parallel", "model.input_feed=false", "model.dec_layers=2"]


@pytest.fixture(scope="session")
def trained_parallel_run(toy_corpus, tmp_path_factory) -> Path:
    """`trained_run`'s model and training with GNMT's decoder (model.decoder=parallel)."""
    return _train_small(toy_corpus, tmp_path_factory.mktemp("parallel") / "run", *PARALLEL_DECODER)


def _train_small(toy_corpus: Path, run: Path, *overrides: str) -> Path:
    from nmt.training.train import train

    sizes = ["model.emb_dim=64", "model.enc_hidden=64", "model.dec_hidden=128"]
    steps = ["train.max_steps=200", "train.valid_every=200", "train.lr=0.005"]
    train(tiny_config(toy_corpus, *steps, *sizes, *overrides), run)
    return run


def gradients(model) -> dict:
    """A copy of each parameter's gradient by name; the model's own are cleared."""
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def assert_as_accurate(candidate: dict, reference: dict, exact: dict) -> None:
    """Each of `candidate`'s gradients is about as close to the float64 `exact` ones as
    `reference`'s (bf16 operands give relative errors of 1e-3 to a few 1e-2)."""
    for name, truth in exact.items():
        candidate_error = (candidate[name].double() - truth).norm() / truth.norm()
        reference_error = (reference[name].double() - truth).norm() / truth.norm()
        assert candidate_error < 1.25 * reference_error + 1e-3, (
            name,
            candidate_error,
            reference_error,
        )


def cpu_plan(model_cfg, precision: str = "fp32"):
    """The CPU training plan for a model; bf16 and fp16 as asked, even where this CPU
    would refuse them."""
    plan = plan_for(torch.device("cpu"), "fp32", training=True, model=model_cfg)
    if precision == "fp32":
        return plan
    kernels = dataclasses.replace(plan.kernels, dtype=DTYPES[precision])
    return dataclasses.replace(plan, precision=precision, kernels=kernels)


def train_one_step(model, batches: list, optimizer, scaler, cfg, precision: str = "fp32") -> dict:
    """One `train_step` of a bare model on CPU batches."""
    plan = cpu_plan(model.cfg, precision)
    objective = TrainingLoss(model, plan, cfg.label_smoothing)
    return train_step(objective, batches, optimizer, scaler, cfg=cfg, plan=plan)

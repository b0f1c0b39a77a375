from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import datasets
import pytest
import sentencepiece as spm
import torch

import nmt.corpus
import nmt.plan
import nmt.training.optimize
from nmt.cli import main
from nmt.config import TrainConfig
from nmt.data import tokenizer_text
from nmt.tokenizer import build_tokenizers
from nmt.training.optimize import learning_rate
from nmt.training.run_dir import RunError
from nmt.training.state import Progress
from nmt.training.train import record_validation, train
from nmt.translate import Translator
from tests.conftest import make_pairs, tiny_config, tiny_train_args


def parameters(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_resumed_run_equals_an_unbroken_one_bitwise(toy_corpus, tmp_path):
    cfg = tiny_config(
        toy_corpus, "train.max_steps=12", "train.valid_every=4", "data.max_tokens=800"
    )

    train(cfg, tmp_path / "unbroken")
    train(
        tiny_config(toy_corpus, "train.max_steps=6", "train.valid_every=4", "data.max_tokens=800"),
        tmp_path / "resumed",
    )
    progress = train(None, tmp_path / "resumed", resume=True, overrides=["train.max_steps=12"])

    assert progress.step == 12
    assert progress.epoch >= 1  # the toy epoch is 5 batches: the resume crossed an epoch boundary
    unbroken, resumed = parameters(tmp_path / "unbroken"), parameters(tmp_path / "resumed")
    assert unbroken.keys() == resumed.keys()
    for name in unbroken:
        assert torch.equal(unbroken[name], resumed[name]), name


def test_run_directory_holds_config_tokenizers_checkpoints_and_metrics(toy_corpus, tmp_path):
    run = tmp_path / "run"
    train(
        tiny_config(toy_corpus, "train.max_steps=4", "train.valid_every=2", "train.log_every=2"),
        run,
    )

    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "src.model",
        "tgt.model",
        "last.pt",
        "best.pt",
        "metrics.jsonl",
    }
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["train", "valid", "train", "valid"]
    assert {"loss", "ppl", "bleu"} <= events[1].keys()
    with pytest.raises(RunError, match="already holds a run"):
        train(tiny_config(toy_corpus), run)


def test_a_lone_checkpoint_translates_without_its_run_directory(toy_corpus, tmp_path):
    run = tmp_path / "run"
    main(["-q", *tiny_train_args(toy_corpus, "train.max_steps=3"), "--out", str(run)])
    lone = tmp_path / "elsewhere.pt"
    lone.write_bytes((run / "last.pt").read_bytes())
    source = tmp_path / "in.de"
    source.write_text("Der hund läuft.\n\n   \nEin mann " + "sieht " * 300 + "\nいぬ\n")

    main(
        [
            "-q",
            "translate",
            str(lone),
            "-i",
            str(source),
            "-o",
            str(tmp_path / "out.en"),
            "--beam",
            "2",
        ]
    )

    lines = (tmp_path / "out.en").read_text().split("\n")
    assert len(lines) == 5 + 1  # five lines and the final newline
    assert (lines[1], lines[2], lines[4]) == ("", "   ", "いぬ")  # nothing to translate, or unknown


def test_overrides_on_resume_apply_and_are_logged(toy_corpus, tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny_config(toy_corpus, "train.max_steps=4", "train.log_every=2"), run)

    with caplog.at_level("INFO", logger="nmt.training.train"):
        train(None, run, resume=True, overrides=["train.max_steps=8", "train.lr=0.0005"])

    assert "resuming with changed settings: train.max_steps=8, train.lr=0.0005" in caplog.text
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [e["lr"] for e in events if e["event"] == "train"]
    assert lrs == [0.003, 0.003, 0.0005, 0.0005]
    assert "lr: 0.0005" in (run / "config.yaml").read_text()


def test_early_stopping_ends_the_run_after_patience_bad_validations(toy_corpus, tmp_path):
    cfg = tiny_config(
        toy_corpus,
        "train.lr=1e-12",
        "train.patience=2",
        "train.valid_every=2",
        "train.max_steps=50",
    )

    progress = train(cfg, tmp_path / "run")

    assert progress.step == 6  # the first validation sets the best; two more fail to beat it
    assert [h["step"] for h in progress.history] == [2, 4, 6]


def test_max_epochs_stops_at_an_epoch_boundary_and_validates_once(toy_corpus, tmp_path):
    cfg = tiny_config(
        toy_corpus,
        "train.max_epochs=1",
        "train.valid_every=1000",
        "train.max_steps=1000",
        "data.max_tokens=800",
    )

    progress = train(cfg, tmp_path / "run")

    assert (progress.epoch, progress.batch_in_epoch) == (1, 0)
    assert [h["step"] for h in progress.history] == [progress.step]


def test_a_streaming_run_resumes_at_the_batch_where_it_stopped(toy_corpus, tmp_path):
    stream = ("data.streaming=true", "data.shuffle_buffer=64", "data.sort_pool=100")
    common = (*stream, "train.valid_every=4", "data.max_tokens=800")
    train(tiny_config(toy_corpus, *common, "train.max_steps=14"), tmp_path / "unbroken")
    train(tiny_config(toy_corpus, *common, "train.max_steps=5"), tmp_path / "resumed")
    progress = train(None, tmp_path / "resumed", resume=True, overrides=["train.max_steps=14"])

    assert progress.epoch >= 1  # crossed an epoch boundary of the stream
    unbroken, resumed = parameters(tmp_path / "unbroken"), parameters(tmp_path / "resumed")
    for name in unbroken:
        assert torch.equal(unbroken[name], resumed[name]), name


def test_a_second_run_on_the_same_data_maps_the_tokenized_cache(toy_corpus, tmp_path, caplog):
    corpus = tmp_path / "corpus"
    shutil.copytree(toy_corpus, corpus, ignore=shutil.ignore_patterns("cache"))
    cfg = tiny_config(corpus, "train.max_steps=3", f"data.cache_dir={tmp_path / 'cache'}")
    train(cfg, tmp_path / "first")
    with caplog.at_level("INFO", logger="nmt.corpus"):
        train(cfg, tmp_path / "second")  # SentencePiece is deterministic: the same tokenizers

    assert "tokenized training split from" in caplog.text
    assert len(list((tmp_path / "cache").iterdir())) == 1
    first, second = parameters(tmp_path / "first"), parameters(tmp_path / "second")
    assert all(torch.equal(first[name], second[name]) for name in first)
    (corpus / "train.de").touch()  # a changed file is another key: no stale cache
    train(cfg, tmp_path / "third")
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_an_updated_hub_dataset_is_tokenized_again_not_read_from_the_cache(
    toy_corpus, tmp_path, monkeypatch
):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    hub = tmp_path / "hub"  # a local folder of split files: what load_dataset takes, offline
    hub.mkdir()

    def publish(pairs, mtime: int) -> None:  # a new version of the dataset
        rows = (json.dumps({"translation": {"de": s, "en": t}}) + "\n" for s, t in pairs)
        (hub / "train.jsonl").write_text("".join(rows))
        os.utime(hub / "train.jsonl", (mtime, mtime))

    publish(make_pairs(100, seed=1), mtime=1_700_000_000)
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    cfg = tiny_config(toy_corpus, f"data.hub={hub}", "data.train=train", cache)
    tokenizers = build_tokenizers(cfg.data, *tokenizer_text(cfg.data))
    first, _ = nmt.corpus.training_split(cfg.data, tokenizers)
    publish(make_pairs(150, seed=3), mtime=1_700_000_100)
    second, _ = nmt.corpus.training_split(cfg.data, tokenizers)

    assert (len(first), len(second)) == (100, 150)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_a_run_that_loses_the_race_to_write_the_cache_keeps_its_data_quietly(
    toy_corpus, tmp_path, caplog, monkeypatch
):
    cfg = tiny_config(toy_corpus, f"data.cache_dir={tmp_path / 'cache'}")
    tokenizers = build_tokenizers(cfg.data, *tokenizer_text(cfg.data))
    clean = nmt.corpus.clean

    def clean_while_another_run_finishes_first(*args, **kwargs):
        monkeypatch.setattr(nmt.corpus, "clean", clean)
        nmt.corpus.training_split(cfg.data, tokenizers)  # the other run writes the cache
        return clean(*args, **kwargs)

    monkeypatch.setattr(nmt.corpus, "clean", clean_while_another_run_finishes_first)
    with caplog.at_level("INFO", logger="nmt.corpus"):
        ds, counts = nmt.corpus.training_split(cfg.data, tokenizers)

    assert "cached by another run" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    (entry,) = (tmp_path / "cache").iterdir()  # the winner's cache, no leftover .tmp
    assert ".tmp" not in entry.name
    assert len(ds) == counts["kept"] > 0


def test_fp16_on_a_cpu_is_a_clear_error(toy_corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*tiny_train_args(toy_corpus, "train.precision=fp16"), "--out", str(tmp_path / "r")])

    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "nmt: error: train.precision=fp16 needs a GPU; on a CPU use fp32 or auto\n"
    )


def test_bf16_on_a_cpu_without_bf16_kernels_is_a_clear_error(
    toy_corpus, tmp_path, capsys, monkeypatch
):
    """Not a run 40x slower than fp32: oneDNN falls back to scalar loops there."""
    monkeypatch.setattr(nmt.plan, "cpu_runs", lambda precision: False)
    with pytest.raises(SystemExit) as exit_:
        main([*tiny_train_args(toy_corpus, "train.precision=bf16"), "--out", str(tmp_path / "r")])

    assert exit_.value.code == 2
    assert "train.precision=bf16 needs a CPU with AVX-512" in capsys.readouterr().err
    assert not (tmp_path / "r" / "last.pt").exists()


@pytest.mark.parametrize(
    ("flags", "units"),
    [
        ("fpu sse avx2 fma", False),  # AVX2 only, like the AMD EPYC of 2026-11-29
        ("fpu avx2 avx512f avx512bw", False),  # AVX-512 without bf16: emulated
        ("fpu avx2 avx512f avx512_bf16", True),
        ("fpu avx2 avx512f amx_bf16 amx_tile", True),
    ],
)
def test_cpu_flags_tell_whether_the_cpu_multiplies_bf16_in_hardware(tmp_path, flags, units):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n")
    assert nmt.plan.cpu_has_bf16_units(cpuinfo) is units


@pytest.mark.parametrize("units", [False, True])
def test_auto_precision_trains_in_bf16_only_on_a_cpu_with_bf16_units(
    toy_corpus, tmp_path, monkeypatch, units
):
    monkeypatch.setattr(nmt.plan, "cpu_has_bf16_units", lambda: units)
    monkeypatch.setattr(nmt.plan, "cpu_runs", lambda precision: True)  # as on such a CPU
    autocast = []  # what each training step's forward ran under
    forward = nmt.training.optimize.TrainingLoss.forward

    def spied(self, **batch):
        on = torch.is_autocast_enabled("cpu")
        autocast.append(torch.get_autocast_dtype("cpu") if on else None)
        return forward(self, **batch)

    monkeypatch.setattr(nmt.training.optimize.TrainingLoss, "forward", spied)
    cfg = tiny_config(toy_corpus, "train.precision=auto", "train.max_steps=2")
    train(cfg, tmp_path / "run")

    assert autocast == [torch.bfloat16 if units else None] * 2


def test_without_a_readable_cpuinfo_auto_precision_on_a_cpu_is_fp32(tmp_path):
    assert not nmt.plan.cpu_has_bf16_units(tmp_path / "missing")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_cpu_training_keeps_freed_buffers_instead_of_faulting_them_back_in():
    """Each step's large temporaries must not come back as fresh pages every time."""
    script = """
import resource, torch
from nmt.plan import keep_freed_memory_mapped
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(2**24)  # 64 MB, freed at once, like a step's logits
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
unmapped = faults()
keep_freed_memory_mapped()
faults(), faults()  # the heap grows to hold them (twice: how it grows depends on the imports)
print(unmapped, faults())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    unmapped, kept = map(int, out.stdout.split())
    assert unmapped > 4 * 2**24 * 4 // 4096  # each 64 MB buffer faulted in anew
    assert kept < unmapped // 20


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (dict(), {1: 1e-3, 100: 1e-3}),
        (dict(warmup_steps=4), {1: 2.5e-4, 2: 5e-4, 4: 1e-3, 50: 1e-3}),
        (dict(schedule="inverse_sqrt", warmup_steps=4), {2: 5e-4, 4: 1e-3, 16: 5e-4, 64: 2.5e-4}),
        (dict(schedule="plateau", min_lr=3e-4), {1: 3e-4}),  # with lr_scale 0.25: the floor
    ],
)
def test_learning_rate_schedules_give_their_known_values(options, expected):
    cfg = TrainConfig(lr=1e-3, **options)
    scale = 0.25 if cfg.schedule == "plateau" else 1.0

    found = {step: learning_rate(cfg, step, scale) for step in expected}

    assert found == pytest.approx(expected)


def test_a_plateau_halves_the_learning_rate_after_decay_patience_bad_validations():
    cfg, progress = TrainConfig(schedule="plateau", decay_patience=2, decay_factor=0.5), Progress()

    improved = [record_validation(progress, {"bleu": b}, cfg) for b in (10, 12, 11, 12, 13)]

    assert improved == [True, True, False, False, True]
    assert progress.lr_scale == 0.5 and progress.best_bleu == 13 and progress.bad_validations == 0


def test_reset_optimizer_resumes_the_weights_with_a_fresh_optimizer_and_schedule(
    toy_corpus, tmp_path
):
    run = tmp_path / "run"
    cfg = tiny_config(toy_corpus, "train.max_steps=4", "train.warmup_steps=10", "train.log_every=1")
    train(cfg, run)
    before = torch.load(run / "last.pt", weights_only=True)

    main(["-q", "train", "--resume", "--reset-optimizer", "--out", str(run), "train.max_steps=6"])

    after = torch.load(run / "last.pt", weights_only=True)
    progress = after["state"]["progress"]
    assert (progress["step"], progress["schedule_start"]) == (6, 4)
    steps = {float(s["step"]) for s in after["state"]["optimizer"]["state"].values()}
    assert steps == {2.0}  # Adam's moments and counts restarted at the resume, not at 4 + 2
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [e["lr"] for e in events if e["event"] == "train"]
    assert lrs[-2:] == pytest.approx([0.003 * 1 / 10, 0.003 * 2 / 10])  # warm-up again
    assert any(not torch.equal(before["model"][k], after["model"][k]) for k in before["model"])


def test_a_bpe_run_trains_bpe_pieces_and_translates(toy_corpus, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(toy_corpus, "train.max_steps=3", "data.spm_model=bpe"), run)

    sp = spm.SentencePieceProcessor(model_file=str(run / "src.model"))
    scores = [sp.get_score(i) for i in range(4, len(sp))]  # after the specials
    # BPE scores a piece by its merge rank (0, -1, -2, ...); unigram by a log-probability
    assert all(score == int(score) for score in scores) and len(set(scores)) > 10
    translated = Translator.load(run, precision="fp32").translate(["Der hund läuft.", ""], beam=2)
    assert [len(h) for h in translated] == [1, 1] and translated[1][0].text == ""

"""What `nmt train --out` may be, what training writes there, and what it keeps."""

from __future__ import annotations

import hashlib

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nmt import cli
from nmt.tokenizer import Tokenizer
from nmt.training.run_dir import LOCK, RUN_FILES, RunError, open_run
from nmt.training.train import train
from tests.conftest import tiny_config, tiny_train_args

# names a user's folder may hold: training's own among them
NAMES = st.sampled_from([*RUN_FILES[:-1], "notes.txt", "step-3.pt", "data.de"]) | st.from_regex(
    r"[a-z]{1,8}\.(txt|yaml|pt)", fullmatch=True
)


def contents(folder) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(names=st.sets(NAMES, min_size=1, max_size=5), resume=st.booleans())
def test_a_folder_of_the_users_is_never_written_into(
    toy_corpus, tmp_path_factory, capsys, names, resume
):
    """Whatever files a folder holds (config.yaml and metrics.jsonl among them), unless
    it is a run (nmt's lock and config, or all of a run's files), training refuses it
    with one line and changes nothing there, not even a lock file."""
    assume(not {"config.yaml", "src.model", "tgt.model", "last.pt"} <= names)
    folder = tmp_path_factory.mktemp("users")
    for name in names:
        (folder / name).write_text(f"the user's {name}\n")
    before = contents(folder)

    with pytest.raises(SystemExit) as exit_:
        cli.main(["-q", *tiny_train_args(toy_corpus), "--out", str(folder)] + ["--resume"] * resume)

    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert contents(folder) == before


def test_the_issues_folder_is_refused_naming_what_it_holds(toy_corpus, tmp_path, capsys):
    for name in ("notes.txt", "config.yaml", "metrics.jsonl"):
        (tmp_path / name).write_text("mine\n")
    afile = tmp_path / "notes.txt"

    for out in (tmp_path, afile):
        with pytest.raises(SystemExit):
            cli.main(["-q", *tiny_train_args(toy_corpus), "--out", str(out)])

    assert capsys.readouterr().err.splitlines() == [
        f"nmt: error: {tmp_path} holds files that are not a run (config.yaml, metrics.jsonl, "
        "notes.txt): choose a new or empty --out",
        f"nmt: error: --out {afile} is a file: name a new or empty directory, or a run",
    ]


def test_an_empty_folder_or_one_a_failed_start_left_is_new(tmp_path):
    cfg = tiny_config(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "left").mkdir()
    (tmp_path / "left" / LOCK).write_text("pid 1 on elsewhere\n")  # died before its config

    for name in ("new", "empty", "left"):
        mode, _, lock = open_run(cfg, tmp_path / name, resume=False, overrides=[])
        lock.release()

        assert mode == "new"
    with pytest.raises(RunError, match="holds no run"):
        open_run(cfg, tmp_path / "empty", resume=True, overrides=[])


def test_a_training_that_fails_at_its_start_leaves_what_it_found(toy_corpus, tmp_path, capsys):
    """A split that cannot be read is found after the lock is taken: the folder the run
    made goes again, and an empty one the user gave stays empty (no lock left)."""
    (tmp_path / "empty").mkdir()
    missing = f"data.train={tmp_path / 'nosuch'}"
    for name in ("new", "empty"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["-q", *tiny_train_args(toy_corpus, missing), "--out", str(tmp_path / name)])

        assert exit_.value.code == 2 and "nosuch" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "empty").iterdir()) == []


def test_kept_checkpoints_are_averaged_from_the_run_folder(toy_corpus, tmp_path, capsys):
    run, avg = tmp_path / "run", tmp_path / "avg.pt"
    asked = ["data.vocab_size=8000", "train.max_steps=6", "train.valid_every=2"]
    cfg = tiny_config(toy_corpus, *asked, "train.keep_last=2")
    train(cfg, run)

    assert sorted(p.name for p in run.glob("step-*.pt")) == ["step-4.pt", "step-6.pt"]
    cli.main(["-q", "average", str(run), "-o", str(avg)])
    kept = [torch.load(run / f"step-{s}.pt", weights_only=True)["model"] for s in (4, 6)]
    averaged = torch.load(avg, weights_only=True)["model"]
    for name, value in averaged.items():
        expected = ((kept[0][name].double() + kept[1][name].double()) / 2).to(value.dtype)
        assert torch.equal(value, expected), name

    # the vocabulary SentencePiece really built is in config.yaml; the original config
    # (asking 8000) still resumes the same run
    built = yaml.safe_load((run / "config.yaml").read_text())["data"]["vocab_size"]
    spm = torch.load(run / "last.pt", weights_only=True)["spm"][0]
    assert built < 8000 and "8000 was asked" in (run / "config.yaml").read_text()
    assert built == len(Tokenizer(bytes(spm.numpy().tobytes())))
    longer = tiny_config(toy_corpus, *asked, "train.keep_last=2", "train.max_steps=8")
    assert train(longer, run, resume=True).step == 8

    with pytest.raises(SystemExit):
        cli.main(["-q", "average", str(tmp_path), "-o", str(avg)])
    assert "keeps no step checkpoints" in capsys.readouterr().err

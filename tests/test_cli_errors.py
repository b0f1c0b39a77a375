"""Every bad input the CLI can be given ends the same way: exit status 2, one line on
stderr that names the option, key or file, no traceback, and every file that was there
before byte-identical.

The cases are generated from the parser (each option's type, bounds and choices, each
input and output by its role) and from the config dataclasses (each field's type and
`ALLOWED` values), so a new option or key is covered without new test code; an option
or key the generator cannot classify fails `test_every_option_and_key_is_covered`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import math
import os
import shutil
import threading
import typing
from pathlib import Path

import pytest
import torch

from nmt import checkpoint, cli, config, options
from nmt.options import SEARCH
from tests.conftest import TINY, tiny_overrides, write_split
from tests.test_serve import free_port

# the parser's arguments by role; the others have a bounded type or choices, or are flags
INPUTS = {"input", "hyp", "ref", "src", "config", "glossary", "avoid"}
MODELS = {"model", "checkpoints"}  # checkpoints or run directories
RUNS = {"run"}  # a run directory `plot` reads
OUTPUTS = {"output", "translations"}
RUN_OUT = {"out"}  # the run directory `train` writes
DEVICES = {"device"}
HOSTS = {"host"}
FREE_TEXT = {"sentence", "overrides", "prefix"}
KEY_DBS = {"api_keys"}  # an SQLite file of API keys, made if missing
ORIGINS = {"cors_origins"}
NAMED_BY_VALUE = (
    INPUTS | MODELS | RUNS | OUTPUTS | RUN_OUT | DEVICES | HOSTS | KEY_DBS | ORIGINS
)  # in the message  # any text is valid
FLAGS = {"help", "resume", "reset_optimizer", "scores", "alignments", "chrf_plus", "no_split"}
FLAGS |= {"retranslate", "review", "glossary_ignore_case"}  # translate's document, term flags
EMPTY_IS_VALID = {("translate", "input"), ("translate", "avoid")}  # no lines: nothing to do
# str config fields with no generated bad value, and why
STR_FIELDS = {
    "data.hub": "a Hub dataset id is checked by the Hub: online",
    "data.hub_config": "used only with data.hub",
    "data.src_column": "used only with data.hub or a .tsv/.jsonl file",
    "data.tgt_column": "used only with data.hub or a .tsv/.jsonl file",
    "data.cache_dir": "any writable directory, created when missing",
    "data.test": "read only by `nmt evaluate --model`, which names it when missing",
}
PATH_FIELDS = {"data.train", "data.valid", "data.src_lang", "data.tgt_lang"}  # name data files
PARALLEL = ["model.decoder=parallel", "model.input_feed=false"]


@pytest.fixture(scope="module")
def world(trained_run, toy_corpus, tmp_path_factory) -> dict[str, Path]:
    """A folder of good and bad files beside a trained run; the cases point at them."""
    root = tmp_path_factory.mktemp("cli-errors")
    files = {
        "src": "Ein Hund läuft.\nZwei Katzen.\n",
        "hyp": "A dog runs.\nTwo cats.\n",
        "ref": "A dog is running.\nTwo cats.\n",
        "existing": "precious work\n",
        "existing.html": "precious page\n",
        "existing.png": "precious picture\n",
        "empty": "",
        "notes.pt": "hello\n",
        "a-file": "x\n",
        "no-tab.tsv": "Hund\n",
        "bad.jsonl": '{"text": "Ein Hund."}\n["Ein Hund."]\n',
        "typo.jsonl": '{"text": "Ein Hund.", "constraint": ["dog"]}\n',
        "long-avoid": "dog\n" + "x" * 300 + "\n",
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "latin1").write_bytes("Straße\n".encode("latin-1"))
    (root / "corrupt.gz").write_bytes(gzip.compress(b"Ein Hund.\n" * 500)[:-30] + b"\0" * 30)
    (root / "cut.pt").write_bytes((trained_run / "last.pt").read_bytes()[:5000])
    torch.save({"format": checkpoint.FORMAT, "config": {}, "weights": [1]}, root / "marked.pt")
    (root / "a-dir").mkdir()
    (root / "bad-run").mkdir()
    (root / "bad-run" / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    write_split(root / "nothing", [])
    return {"root": root, "run": trained_run, "corpus": toy_corpus}


def valid_args(command: str, w: dict[str, Path]) -> list[str]:
    """Arguments each command accepts (`test_the_valid_arguments_work`); a case replaces
    one by a bad value. Outputs are existing files, which a refusal must leave alone."""
    root, run = w["root"], str(w["run"])
    return {
        "train": ["train", str(TINY), *tiny_overrides(w["corpus"]), "--out", str(root / "new")],
        "translate": ["translate", run, "-i", str(root / "src"), "-o", str(root / "existing")],
        "inspect": ["inspect", run, "Ein Hund.", "-o", str(root / "existing.html")],
        "average": ["average", f"{run}/last.pt", f"{run}/best.pt", "-o", str(root / "existing")],
        "evaluate": ["evaluate", "--hyp", str(root / "hyp"), "--ref", str(root / "ref")],
        "plot": ["plot", run, "-o", str(root / "existing.png")],
        "serve": ["serve", run, "--port", str(free_port())],
    }[command]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli.build_parser()._actions if a.choices)
    return dict(action.choices)


def bad_values(command: str, action: argparse.Action, w: dict[str, Path]) -> list[str]:
    """The values `action` must refuse: by its role, its choices or its type's bounds."""
    root, dest = w["root"], action.dest
    missing, a_dir, under_a_file = root / "missing", root / "a-dir", root / "a-file" / "x"
    if dest in INPUTS:
        empty = [] if (command, dest) in EMPTY_IS_VALID else [root / "empty"]
        return [str(p) for p in (missing, a_dir, *empty, root / "latin1", root / "corrupt.gz")]
    if dest in MODELS:
        return [str(missing), *(str(root / n) for n in ("notes.pt", "cut.pt", "marked.pt"))]
    if dest in RUNS:
        return [str(p) for p in (missing, a_dir, root / "bad-run")]
    if dest in OUTPUTS:  # a directory, under a file, a full disk, the command's input
        own_input = {"translate": root / "src", "evaluate": root / "hyp"}
        own_input["average"] = w["run"] / "last.pt"
        outputs = [a_dir, under_a_file, Path("/dev/full"), own_input.get(command)]
        return [str(p) for p in outputs if p]
    if dest in RUN_OUT:
        return [str(p) for p in (root / "a-file", under_a_file, w["run"])]
    if dest in DEVICES:
        return ["foo", "cuda:7"] + ([] if torch.cuda.is_available() else ["cuda"])
    if dest in HOSTS:
        return ["10.255.255.1"]  # a valid address, not this machine's
    if dest in KEY_DBS:  # a text file is left as it was
        return [str(p) for p in (a_dir, under_a_file, root / "existing")]
    if dest in ORIGINS:
        return ["localhost:8000", "http://example.org/page"]
    if action.choices:
        return ["bogus"]
    if dest in SEARCH:  # checked by SearchOptions, with the message the server gives
        low, high, low_in, high_in = options.parse_interval(SEARCH[dest].bounds)
        outside = [low - 1 if low_in else low] + ([] if math.isinf(high) else [high + 1])
        return [*(f"{v:g}" for v in outside), "nan", "x"]
    if hasattr(action.type, "least"):
        step = 1 if action.type.kind is int else 0.5
        above = [] if math.isinf(action.type.most) else [f"{action.type.most + step:g}"]
        return [f"{action.type.least - step:g}", "nan", "x", *above]
    return []


def option_cases(w: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(case, argv, what the message must name) for every argument of every command."""
    cases = []
    for command, parser in subparsers().items():
        args = valid_args(command, w)
        for action in parser._actions:
            for value in bad_values(command, action, w):
                by_value = action.dest in NAMED_BY_VALUE
                if action.option_strings:
                    argv = _set_option(args, action.option_strings, value)
                    named = value if by_value else action.option_strings[-1]
                    named = action.dest if action.dest in SEARCH else named
                else:
                    argv = _set_positional(parser, args, action, value)
                    named = value
                cases.append((f"{command} {action.dest}={Path(value).name}", argv, named))
    return cases


def _set_option(args: list[str], flags: list[str], value: str) -> list[str]:
    for i, arg in enumerate(args):
        if arg in flags:
            return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flags[-1], value]


def _set_positional(parser, args: list[str], action: argparse.Action, value: str) -> list[str]:
    positions = [a for a in parser._actions if not a.option_strings and a.dest != "overrides"]
    index = 1 + positions.index(action)  # args[0] is the command
    return [*args[:index], value, *args[index + 1 :]]


def config_cases(w: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """Every config field's bad values, as `train` overrides (and decode.* on translate)."""
    cases = []
    for section, cls, field, hint in config_fields():
        key = f"{section}.{field}"
        for value in bad_config_values(key, hint, cls.ALLOWED.get(field)):
            override, named = f"{key}={value}", value if key in PATH_FIELDS else key
            cases.append((f"train {override}", [*valid_args("train", w), override], named))
            if section == "decode":
                argv = [*valid_args("translate", w), override]
                cases.append((f"translate {override}", argv, named))
    return cases


def config_fields():
    for section in dataclasses.fields(config.Config):
        cls = section.default_factory
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            yield section.name, cls, field.name, hints[field.name]


def bad_config_values(key: str, hint, allowed) -> list[str]:
    if isinstance(allowed, tuple):
        return ["bogus"]
    if key in PATH_FIELDS:
        return ["missing" if "lang" in key else "/nonexistent/split"]
    if hint is str:
        return []
    is_tuple = typing.get_origin(hint) is tuple
    plain = {int: ["x", "1.5"], float: ["x", "nan", "inf"], bool: ["maybe"]}
    values = plain.get(hint, ["[0.9]", "[x, y]", "[nan, 0.9]"])
    outside = []
    if isinstance(allowed, str):
        low, high, low_in, high_in = options.parse_interval(allowed)
        outside.append(low - 1 if low_in else low)
        if not math.isinf(high):
            outside.append(high + 1 if high_in else high)
    return [*values, *(f"[{v:g}, 0.5]" if is_tuple else f"{v:g}" for v in outside)]


def semantic_cases(w: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """What only a combination, or a file's contents, makes wrong (the issue's list)."""
    root, run = w["root"], str(w["run"])
    translate, train = valid_args("translate", w), valid_args("train", w)
    resume = ["train", "--resume", "--out", run]
    evaluate = [*valid_args("evaluate", w), "-o", str(root / "ref")]
    inspect_txt = [*valid_args("inspect", w)[:-1], str(root / "x.txt")]
    inspect_nothing = ["inspect", run, "  ", "-o", str(root / "existing.html")]
    not_started = root / "not-started"  # a run folder whose metrics.jsonl holds no step yet
    not_started.mkdir(exist_ok=True)
    (not_started / "metrics.jsonl").write_text("")
    return [
        ("translate -i f -o f", [*translate[:-1], str(root / "src")], "a file this command reads"),
        ("translate missing -i", _set_option(translate, ["-i"], str(root / "nope")), "nope"),
        ("nbest with scores", [*translate, "--nbest", "2", "--scores"], "--scores"),
        ("nbest with alignments", [*translate, "--nbest", "2", "--alignments"], "--alignments"),
        ("nbest above beam", [*translate, "--nbest", "3", "--beam", "2"], "nbest 3"),
        ("sampling nbest", [*translate, "--sample-temperature", "1", "--nbest", "2"], "nbest"),
        ("top-k without sampling", [*translate, "--sample-top-k", "3"], "sample_top_k"),
        ("translate a model override", [*translate, "model.emb_dim=8"], "model.emb_dim"),
        ("resume changes the model", [*resume, "model.emb_dim=32"], "model.emb_dim"),
        ("resume changes the vocabulary", [*resume, "data.vocab_size=900"], "data.vocab_size"),
        ("resume with another config", [*resume, str(TINY)], "cannot change on --resume"),
        ("reset without resume", [*train, "--reset-optimizer"], "--reset-optimizer"),
        ("vocabulary too small", [*train, "data.vocab_size=10"], "data.vocab_size"),
        ("empty training file", [*train, f"data.train={root / 'nothing'}"], "nothing"),
        ("empty validation file", [*train, f"data.valid={root / 'nothing'}"], "nothing"),
        ("same languages", [*train, "data.tgt_lang=de"], "data.tgt_lang"),
        ("parallel decoder, input feeding", [*train, "model.decoder=parallel"], "input_feed"),
        ("parallel decoder, one layer", [*train, *PARALLEL, "model.dec_layers=1"], "dec_layers"),
        ("inspect -o neither html nor png", inspect_txt, "x.txt"),
        ("inspect an empty sentence", inspect_nothing, "empty"),
        ("plot a run with no step yet", ["plot", str(not_started)], "no training or validation"),
        ("evaluate -o a reference", evaluate, "a file this command reads"),
        ("evaluate --device without --model", [*evaluate[:-2], "--device", "cpu"], "--device"),
        ("a glossary line without a target", [*translate, "--glossary", str(root / "no-tab.tsv")],
         "no-tab.tsv line 1"),
        ("ignore case without a glossary", [*translate, "--glossary-ignore-case"], "--glossary"),
        ("a prefix for a page", [*translate, "--format", "html", "--prefix", "A"], "--prefix"),
        ("a prefix while sampling", [*translate, "--prefix", "A", "--sample-temperature", "1"],
         "--prefix"),
        ("an empty prefix", [*translate, "--prefix", "  "], "empty"),
        ("a JSON line that is no object", _set_option(translate, ["-i"], str(root / "bad.jsonl")),
         "bad.jsonl line 2"),
        ("a JSON line with a misspelt key",
         _set_option(translate, ["-i"], str(root / "typo.jsonl")), "constraint"),
        ("a phrase to avoid over the limit", [*translate, "--avoid", str(root / "long-avoid")],
         "long-avoid line 2"),
    ]  # fmt: skip


def snapshot(*roots: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_refused(argv: list[str], named: str, w: dict[str, Path], capsys) -> None:
    before = snapshot(w["root"], w["run"])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["-q", *argv])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in err, err
    assert named in lines[0], f"{lines[0]!r} does not name {named!r}"
    after = snapshot(w["root"], w["run"])
    assert {k: v for k, v in after.items() if k in before} == before, "a file was changed"
    assert not [k for k in after if k.endswith(".tmp")], "a temporary file was left"
    shutil.rmtree(w["root"] / "new", ignore_errors=True)


CASES = {"options": option_cases, "config keys": config_cases, "combinations": semantic_cases}


@pytest.mark.parametrize("kind", CASES)
def test_every_bad_input_is_one_line_and_exit_2_and_changes_no_file(kind, world, capsys):
    cases, failures = CASES[kind](world), []
    for name, argv, named in cases:
        try:
            assert_refused(argv, named, world, capsys)
        except (Exception, pytest.fail.Exception) as err:  # every failure, not the first
            failures.append(f"{name}: {type(err).__name__}: {str(err)[:400]}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)
    with capsys.disabled():
        print(f"\n{kind}: {len(cases)} cases, each refused as it should be")


def test_every_option_and_key_is_covered():
    """A new argument or config field must get a role here, or generated bad values."""
    roles = INPUTS | MODELS | RUNS | OUTPUTS | RUN_OUT | DEVICES | HOSTS | FREE_TEXT | FLAGS
    roles |= KEY_DBS | ORIGINS
    for command, parser in subparsers().items():
        for action in parser._actions:
            covered = action.dest in roles or action.choices or hasattr(action.type, "least")
            covered = covered or action.dest in SEARCH
            assert covered, f"nmt {command}: no bad values for {action.dest}"
    for section, cls, field, hint in config_fields():
        key = f"{section}.{field}"
        covered = key in STR_FIELDS or key in PATH_FIELDS or field in cls.ALLOWED or hint is bool
        assert covered, f"{key}: give it ALLOWED values (or a role in this test)"


def test_the_valid_arguments_work(world, tmp_path):
    """The cases' starting points succeed, so each refusal is its bad value's doing."""
    root = world["root"]
    for command in set(subparsers()) - {"serve"}:  # it serves until stopped: test_serve.py
        args = valid_args(command, world)
        for name in ("existing", "existing.html", "existing.png", "new"):  # outputs elsewhere
            args = [a.replace(str(root / name), str(tmp_path / name)) for a in args]
        if command == "train":
            args += ["train.max_steps=2", "train.valid_every=2"]
        cli.main(["-q", *args])
    assert (tmp_path / "new" / "last.pt").is_file() and (tmp_path / "existing").stat().st_size
    assert (tmp_path / "existing.png").read_bytes()[:4] == b"\x89PNG"


def test_outputs_that_are_not_regular_files_are_written_through(world, tmp_path):
    """`average -o FIFO` writes into the pipe (it used to replace it by a file)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    run = world["run"]
    cli.main(["-q", "average", str(run / "last.pt"), str(run / "best.pt"), "-o", str(fifo)])
    reader.join(timeout=60)
    assert fifo.is_fifo() and received[0][:2] == b"PK"  # a torch.save archive


def test_the_python_api_refuses_a_string_and_bad_options(world):
    from nmt.translate import Translator

    translator = Translator.load(world["run"], precision="fp32")
    with pytest.raises(TypeError, match=r"translate\(\[text\]\)"):
        translator.translate("Ein Hund.")
    with pytest.raises(options.OptionError, match="beam must be"):
        translator.translate(["Ein Hund."], beam=0)
    with pytest.raises(options.OptionError, match="sample_temperature"):
        translator.translate(["Ein Hund."], sample_temperature=-1.0)

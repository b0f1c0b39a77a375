"""No command ever changes a file the user did not name as its output, and none leaves a
temporary file behind, whatever it is given and however it ends.

The property is tested over command lines generated from the parser: every argument
by its role (a file the command reads, a model or run, an output, a flag or a choice),
with each output pointed at a file or folder of a sandbox that holds a trained run,
data, unrelated user files, and links (symbolic and hard) into the run. The rule the
test checks is its own, not the implementation's list:

- a file the command line names as read (a run named in any way: every file training
  wrote in it) never changes;
- any other existing file changes only if it is the named output (or what that output
  links to); an output named for training is a folder, where only a run's own files
  may change, and only with --resume;
- new files appear only as a named output (inside it, for training's folder) or as a
  documented default output that did not exist (`evaluate`'s translations);
- no temporary file is left, and the exit status is 0 or 2 (no crash).

`nmt serve` writes no file: it answers over HTTP (tests/test_serve.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nmt import cli
from nmt.options import SEARCH
from tests.conftest import TINY
from tests.test_cli_errors import subparsers

COMMANDS = sorted(set(subparsers()) - {"serve"})
OUTPUTS = {"output", "translations", "out"}  # where commands write
NOT_DRAWN = {"help", "device", "host", "port", "quiet"}  # left at their defaults
SENTENCE = "Ein Hund."


class Sandbox:
    """root/run (a trained run, its kept checkpoints, and the user's notes in it),
    root/data (inputs and a training config), root/user (unrelated files, and links
    into the run and the data)."""

    def __init__(self, root: Path, trained_run: Path, corpus: Path):
        self.root, self.trained_run, self.corpus = root, trained_run, corpus
        self.run, self.data, self.user = root / "run", root / "data", root / "user"
        self.build()
        notes = self.run / "notes.txt"  # the user's, in the run folder
        self.run_files = {p for p in self.files() if p.parent == self.run} - {notes}
        self.pristine_files, self.pristine_dirs = sorted(self.files()), sorted(self.dirs())

    def build(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(self.trained_run, self.run)
        for step in (100, 200):  # as train.keep_last would have kept them
            shutil.copy(self.run / "best.pt", self.run / f"step-{step}.pt")
        (self.run / "notes.txt").write_text("the user's notes, in the run folder\n")
        self.data.mkdir()
        for name in ("train.de", "train.en", "val.de", "val.en"):
            shutil.copy(self.corpus / name, self.data / name)
        (self.data / "src.de").write_text("Der hund läuft.\nEin mann sieht die katze.\n")
        (self.data / "ref.en").write_text("the dog runs.\na man sees the cat.\n")
        (self.data / "hyp.en").write_text("the dog runs.\na man sees a cat.\n")
        (self.data / "terms.tsv").write_text("Hund\tdog\n")  # a glossary
        (self.data / "avoid.txt").write_text("cat\n")
        shutil.copy(TINY, self.data / "train.yaml")  # pointed at data/ by train_overrides
        self.user.mkdir()
        (self.user / "notes.txt").write_text("precious\n")
        (self.user / "old.en").write_text("an earlier translation\n")
        (self.user / "report.json").write_text('{"bleu": 1}\n')
        (self.user / "picture.png").write_bytes(b"\x89PNG not really\n")
        (self.user / "model-link.pt").symlink_to(self.run / "best.pt")
        (self.user / "src-link.de").symlink_to(self.data / "src.de")
        os.link(self.run / "last.pt", self.user / "hard-last.pt")

    def train_overrides(self) -> list[str]:
        data = self.data
        return [
            f"data.train={data / 'train'}",
            f"data.valid={data / 'val'}",
            f"data.test={data / 'val'}",
            "data.vocab_size=80",
            "data.cache_dir=",
            "train.max_steps=2",
            "train.valid_every=2",
        ]

    def files(self) -> list[Path]:
        return [
            Path(d) / name
            for d, dirs, names in os.walk(self.root)
            for name in names + [x for x in dirs if (Path(d) / x).is_symlink()]
        ]

    def dirs(self) -> list[Path]:
        return [Path(d) for d, _, _ in os.walk(self.root)]

    def state(self) -> dict[Path, str]:
        """Each path's kind and contents (a link by where it points, and hard links
        by their shared inode)."""
        found = {}
        for path in self.files():
            if path.is_symlink():
                found[path] = f"link {os.readlink(path)}"
            else:
                data = hashlib.sha256(path.read_bytes()).hexdigest()
                found[path] = f"{data} inode {path.stat().st_ino}"
        return found


@pytest.fixture(scope="module")
def sandbox(trained_run, toy_corpus, tmp_path_factory) -> Sandbox:
    box = Sandbox(tmp_path_factory.mktemp("files") / "box", trained_run, toy_corpus)
    cwd = os.getcwd()
    os.chdir(box.root)  # default outputs (evaluate's translations) land in the sandbox
    yield box
    os.chdir(cwd)


def read_candidates(box: Sandbox) -> dict[str, list[str]]:
    """Values for each argument that names something read, by its dest."""
    run, data, user = box.run, box.data, box.user
    models = [run, run / "best.pt", user / "model-link.pt"]
    return {
        "input": [data / "src.de", user / "src-link.de"],
        "hyp": [data / "hyp.en"],
        "ref": [data / "ref.en"],
        "src": [data / "src.de"],
        "config": [data / "train.yaml"],
        "model": models,
        "checkpoints": [run, run / "step-100.pt", run / "step-200.pt", user / "hard-last.pt"],
        "run": [run],
        "glossary": [data / "terms.tsv"],
        "avoid": [data / "avoid.txt"],
    }


def targets(box: Sandbox, dest: str) -> st.SearchStrategy[Path]:
    """A file of the sandbox, or a new name beside them, half and half; folders too for
    training's output."""
    new = [box.root / "new.en", box.user / "new.json", box.run / "new.html", box.user / "x.gz"]
    new += [box.user / "new.png"]
    existing = box.pristine_files
    if dest == "out":
        new, existing = [box.root / "new-run", box.run / "sub"], box.pristine_dirs + existing
    return st.sampled_from(new) | st.sampled_from(existing)


def sometimes(draw, dest: str, reads: dict) -> bool:
    """An optional input is given three times in four, another option one time in four:
    most command lines stay valid, and reach the writing of their outputs."""
    return draw(st.integers(0, 3)) != 0 if dest in reads else draw(st.integers(0, 3)) == 0


@st.composite
def command_lines(draw, box: Sandbox) -> tuple[list[str], dict[str, Path]]:
    """A command line drawn from the parser -> (argv, {output dest: target})."""
    command = draw(st.sampled_from(COMMANDS))
    reads, argv, outputs = read_candidates(box), [command], {}
    for action in subparsers()[command]._actions:
        dest, flag = action.dest, (action.option_strings or [None])[-1]
        required = action.required or not action.option_strings
        if dest in NOT_DRAWN or (not required and not sometimes(draw, dest, reads)):
            if dest not in OUTPUTS - {"translations"}:  # outputs always: never a default file
                continue
        if dest in OUTPUTS:
            outputs[dest] = draw(targets(box, dest))
            values = [str(outputs[dest])]
        elif dest in reads:
            many = action.nargs in ("+", "*") and draw(st.booleans())
            values = [str(draw(st.sampled_from(reads[dest]))) for _ in range(1 + many)]
        elif dest == "sentence":
            values = [SENTENCE]
        elif dest == "prefix":
            values = ["A "]
        elif dest == "overrides":
            values = box.train_overrides() if command == "train" else []
        elif action.choices:
            values = [draw(st.sampled_from(sorted(action.choices)))]
        elif action.nargs == 0:  # a flag
            values = []
        else:
            continue  # numbers: their defaults (test_cli_errors.py covers their bounds)
        argv += [flag, *values] if flag else values
    return argv, outputs


def protected(argv: list[str], box: Sandbox) -> set[Path]:
    """What the command line names as read: those files, and the run whole where any
    of them is in it (through links)."""
    outputs = {Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in OUTPUT_FLAGS}
    named = {Path(a) for a in argv if Path(a).exists()} - outputs
    found = {p for p in named if p.is_file()}
    if any(p == box.run or p.resolve().parent == box.run for p in named):
        found |= box.run_files
    return found


OUTPUT_FLAGS = {"-o", "--output", "--translations", "--out"}


def allowed_changes(argv: list[str], outputs: dict[str, Path], before: dict, box: Sandbox):
    """-> (existing files that may change, a test for new files that may appear)."""
    guarded = protected(argv, box)
    may_change, new_under = set(), []
    for dest, target in outputs.items():
        if dest == "out":
            if target == box.run and "--resume" in argv:
                may_change |= set(box.run_files) | {box.run / ".nmt-train.lock"}
            new_under.append(target)
            continue
        may_change |= {target, target.resolve()} - guarded
        new_under.append(target)

    def new_ok(path: Path) -> bool:
        default = path.name.endswith(".hyp") or ".hyp." in path.name  # evaluate's
        inside = any(path == t or t in path.parents for t in new_under if t not in before)
        run_file = "--resume" in argv and path.parent == box.run and outputs.get("out") == box.run
        return default or inside or run_file

    return may_change, new_ok


def leftovers(box: Sandbox) -> list[Path]:
    return [p for p in box.files() if p.name.endswith(".tmp") or ".tmp" in p.name]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
@example(data=None)  # the issue's own cases, first: see `ISSUE_CASES`
def test_no_file_but_the_named_output_ever_changes(sandbox, data, capsys, monkeypatch):
    cases = ISSUE_CASES(sandbox) if data is None else [data.draw(command_lines(sandbox))]
    for argv, outputs in cases:
        before = sandbox.state()
        try:
            status, err = run_in_process(argv, sandbox, capsys, monkeypatch)
            after = sandbox.state()
            may_change, new_ok = allowed_changes(argv, outputs, before, sandbox)
            changed = {p for p in before if after.get(p) != before[p]}
            assert changed <= may_change, f"{argv}: changed {changed - may_change}\n{err}"
            appeared = [p for p in after if p not in before and not new_ok(p)]
            assert not appeared, f"{argv}: {appeared} appeared\n{err}"
            assert not leftovers(sandbox), f"{argv}: left {leftovers(sandbox)}"
            assert status in (0, 2), f"{argv}: exit {status}\n{err}"
            if status == 2:
                assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        finally:
            if sandbox.state() != before:  # the next case starts from the same sandbox
                sandbox.build()


def run_in_process(argv: list[str], box: Sandbox, capsys, monkeypatch) -> tuple[object, str]:
    """`nmt -q ARGV` in this process (stdin: a source file) -> (exit status, stderr)."""
    status = 0
    try:
        with open(box.data / "src.de", encoding="utf-8") as stdin:  # translate without -i
            monkeypatch.setattr(sys, "stdin", stdin)
            cli.main(["-q", *argv])
    except SystemExit as exit_:
        status = exit_.code
    except Exception as crash:  # a bug: reported with the command line, not raised
        status = f"a crash: {type(crash).__name__}: {crash}"
    return status, capsys.readouterr().err


def ISSUE_CASES(box: Sandbox) -> list[tuple[list[str], dict[str, Path]]]:
    """The outputs the issue found destroyed (exit 0): a checkpoint, a tokenizer, the
    training log; and a user's folder given to training."""
    run, src, ref = box.run, box.data / "src.de", box.data / "ref.en"
    translate = ["translate", str(run), "-i", str(src), "-o"]
    evaluate = ["evaluate", "--model", str(run), "--src", str(src), "--ref", str(ref), "-o"]
    return [
        ([*translate, str(run / "best.pt")], {"output": run / "best.pt"}),
        ([*translate, str(run / "src.model")], {"output": run / "src.model"}),
        ([*translate, str(box.user / "model-link.pt")], {"output": box.user / "model-link.pt"}),
        ([*evaluate, str(run / "best.pt")], {"output": run / "best.pt"}),
        (["plot", str(run), "-o", str(run / "metrics.jsonl")], {"output": run / "metrics.jsonl"}),
        (["average", str(run), "-o", str(run / "step-100.pt")], {"output": run / "step-100.pt"}),
        (
            ["train", str(box.data / "train.yaml"), *box.train_overrides(), "--out", str(box.user)],
            {"out": box.user},
        ),
    ]


def test_the_generator_covers_every_command_and_argument(sandbox):
    """Every argument of every command has a role here (else the property would never
    point it anywhere, or never vary it), and every command writes somewhere."""
    reads = read_candidates(sandbox)
    for command in COMMANDS:
        parser = subparsers()[command]
        assert {a.dest for a in parser._actions} & OUTPUTS, f"{command} writes nothing"
        for action in parser._actions:
            drawn = {"sentence", "overrides", "prefix"}
            known = action.dest in OUTPUTS | NOT_DRAWN | drawn | set(reads)
            known = known or bool(action.choices) or action.nargs == 0
            numbers = action.dest in SEARCH or hasattr(action.type, "least")  # defaults
            assert known or numbers, f"nmt {command}: no role for {action.dest}"


# the pieces the property rests on, each on its own


def test_a_signal_at_any_moment_of_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    """Interrupted (as a signal raises) after each possible number of writes, and
    between creating the temporary file and entering its `try`."""
    from nmt import outputs
    from nmt.interrupts import Interrupted

    target = tmp_path / "out.txt"
    target.write_text("old\n")
    for stop_after in range(4):  # 3: after the last write, before the rename
        with pytest.raises(Interrupted):
            with outputs.output_file(target) as out:
                for i in range(stop_after):
                    out.write(f"line {i}\n")
                raise Interrupted()
        assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]

    real_open = os.open

    def open_then_interrupted(*args, **kwargs):  # the file exists, its name never returned
        real_open(*args, **kwargs)
        raise Interrupted()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outputs.os, "open", open_then_interrupted)
        with pytest.raises(Interrupted):
            outputs.write_output(target, "new\n")
    assert len(list(tmp_path.iterdir())) == 2  # what cli.main's cleanup is for
    outputs.remove_temporaries()
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_gz_outputs_are_compressed_and_links_followed_or_refused(tmp_path):
    import gzip

    from nmt.outputs import OutputError, check_output, write_output

    write_output(tmp_path / "a.txt.gz", "eins\nzwei\n")
    assert gzip.decompress((tmp_path / "a.txt.gz").read_bytes()) == b"eins\nzwei\n"
    source, link, hard = tmp_path / "src", tmp_path / "link", tmp_path / "hard"
    source.write_text("read me\n")
    link.symlink_to(source)
    os.link(source, hard)
    for alias in (source, link, hard):
        with pytest.raises(OutputError, match="a file this command reads"):
            check_output(alias, [source])
    write_output(link, "through the link\n")  # not read: the link stays, its file is written
    assert link.is_symlink() and source.read_text() == "through the link\n"

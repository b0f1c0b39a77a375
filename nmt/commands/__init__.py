"""What each `nmt` subcommand does, given its parsed arguments (`nmt.cli` parses them).

Each hands off to library functions; the checks here are the ones only the command
line has: options that cannot apply together, inputs that must exist before a model
is loaded. Every output is opened by `nmt.outputs.output_file`, and may be none of the
files the command reads (`nmt.commands.files.files_read`: run folders whole).
`nmt evaluate` is `nmt.commands.evaluate`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import sys
from pathlib import Path

from nmt.commands.evaluate import cmd_evaluate
from nmt.commands.files import UsageError, existing_file, files_read, progress_bar
from nmt.errors import NmtError
from nmt.options import SEARCH, SearchOptions

log = logging.getLogger("nmt")
LINE_FORMATS = ("text", "jsonl")  # one output line per input line; the rest: documents


__all__ = [
    "UsageError",
    "cmd_average",
    "cmd_evaluate",
    "cmd_inspect",
    "cmd_plot",
    "cmd_serve",
    "cmd_serve_keys",
    "cmd_train",
    "cmd_translate",
]


def cmd_train(args: argparse.Namespace) -> None:
    from nmt.config import Config
    from nmt.training.train import train

    # --resume without CONFIG: the run's own config with the overrides on top
    cfg = Config.from_yaml(args.config, args.overrides) if args.config else None
    resume = {"resume": args.resume, "reset_optimizer": args.reset_optimizer}
    overrides = [] if args.config else args.overrides
    train(cfg, Path(args.out), overrides=overrides, device=args.device, **resume)


def cmd_translate(args: argparse.Namespace) -> None:
    from nmt.data import iter_lines
    from nmt.outputs import check_output, output_file
    from nmt.text.documents import Summary, translate_lines
    from nmt.text.jsonl import jsonl_lines
    from nmt.translate import Translator

    search = SearchOptions.parse({name: getattr(args, name) for name in SEARCH})
    if search.nbest > 1 and (args.scores or args.alignments):
        raise UsageError("--scores and --alignments need --nbest 1 (n-best rows hold scores)")
    if args.input != "-":
        existing_file(args.input, "input ")
    fmt = _input_format(args)
    if fmt not in LINE_FORMATS and (search.nbest > 1 or args.scores or args.alignments):
        raise UsageError(f"--format {fmt} writes one document: no --nbest, --scores, --alignments")
    for item in args.overrides:  # the model's own settings came with its weights
        if not item.startswith("decode."):
            raise UsageError(f"{item}: translate takes decode.* overrides only")
    terms = _terms(args, fmt, search)
    reads = files_read(args)
    check_output(args.output, reads)
    load = {"device": args.device, "precision": args.precision, "overrides": args.overrides}
    translator = Translator.load(args.model, **load)
    if terms["glossary"]:  # a term the model cannot write: refused before any line
        try:
            terms["glossary"].check(translator)
        except NmtError as err:
            raise UsageError(f"glossary {args.glossary}: {err}") from None
    options = {**dataclasses.asdict(search), "split": not args.no_split, "summary": Summary()}
    options.update(terms)
    if fmt not in LINE_FORMATS:  # the whole input is one document
        _translate_document(translator, fmt, args, options, reads)
    else:
        with output_file(args.output, reads=reads) as out:
            lines = iter_lines(args.input, args.errors)
            if fmt == "jsonl":
                name = "<stdin>" if args.input == "-" else args.input
                lines = jsonl_lines(lines, name, translator.targets)
            lines = translate_lines(translator, lines, **options)
            with progress_bar(args.input) as progress:
                for line_id, hyps in enumerate(lines):
                    out.write(_format(line_id, hyps, search.nbest, args))
                    progress.update(1)
    log.info("translated %s", options["summary"])


def _input_format(args: argparse.Namespace) -> str:
    """The input's format (checked before a model is loaded), and the output's name
    checked against it: a .docx comes back as a .docx."""
    from nmt.text.formats import BINARY, FORMATS, format_of

    given = None if args.format == "auto" else args.format
    if given == "jsonl" or (not given and args.input.endswith((".jsonl", ".jsonl.gz"))):
        fmt = "jsonl"
    else:
        fmt = format_of(args.input, given) if args.input != "-" else given or "text"
    if args.output != "-":
        suffix = Path(args.output).suffix.lower().lstrip(".")
        named = [name for name, (_, suffixes) in FORMATS.items() if suffix in suffixes]
        if named and named != ["text" if fmt == "jsonl" else fmt]:
            raise UsageError(f"-o {args.output}: a {fmt} input comes back as {fmt}; name it so")
    elif fmt in BINARY and sys.stdout.isatty():
        raise UsageError(f"a {fmt} file is not written to a terminal: give -o FILE")
    return fmt


def _glossary(args: argparse.Namespace):
    """--glossary FILE (with --glossary-ignore-case), read; None without."""
    from nmt.text.glossary import Glossary

    if args.glossary_ignore_case and not args.glossary:
        raise UsageError("--glossary-ignore-case applies only with --glossary")
    if not args.glossary:
        return None
    path = existing_file(args.glossary, "glossary ")
    return Glossary.read(path, ignore_case=args.glossary_ignore_case)


def _terms(args: argparse.Namespace, fmt: str, search: SearchOptions) -> dict:
    """translate's --glossary, --avoid and --prefix, read and checked before any model
    is loaded: the `glossary` and `common` options of `nmt.text.documents`."""
    from nmt.data import read_lines
    from nmt.options import Constraints

    if args.prefix is not None and fmt not in LINE_FORMATS:
        raise UsageError(f"--prefix begins each line: not with --format {fmt}")
    given = [f"--{x}" for x in ("glossary", "avoid", "prefix") if getattr(args, x) is not None]
    if search.sampling and (given or fmt == "jsonl"):
        what = " and ".join(given) or "jsonl input"
        raise UsageError(f"{what}: constraints need beam search, not --sample-temperature")
    glossary = _glossary(args)
    avoid = []
    if args.avoid:
        for number, line in enumerate(read_lines(existing_file(args.avoid, "--avoid ")), 1):
            try:
                avoid += Constraints(avoid=(line.strip(),)).avoid if line.strip() else ()
            except NmtError as err:
                raise UsageError(f"{args.avoid} line {number}: {err}") from None
    common = Constraints(avoid=tuple(avoid), prefix=args.prefix or "")
    return {"glossary": glossary, "common": common or None}


def _translate_document(translator, fmt: str, args, options: dict, reads: list[Path]) -> None:
    """The whole input, one document of its format (a file, a pipe or stdin), translated
    into one output."""
    from nmt.data import read_bytes
    from nmt.outputs import write_output
    from nmt.text.formats import BINARY, FileOptions, translate_file

    data = read_bytes(args.input)
    name = "<stdin>" if args.input == "-" else args.input
    if args.errors == "replace" and fmt not in BINARY:
        data = data.decode("utf-8", errors="replace").encode("utf-8")
    files = FileOptions(retranslate=args.retranslate, review=args.review)
    out = translate_file(translator, data, fmt, name, files, **options)
    write_output(args.output, out, reads=reads)


def _format(line_id: int, hyps: list, nbest: int, args: argparse.Namespace) -> str:
    """One line per input line, or with --nbest N, N `id ||| text ||| score` rows."""
    if nbest > 1:
        return "".join(f"{line_id} ||| {h.text} ||| {h.score:.4f}\n" for h in hyps)
    fields = [hyps[0].text]
    if args.scores:
        fields.append(f"{hyps[0].score:.4f}")
    if args.alignments:
        fields.append(hyps[0].alignment_pairs())
    return "\t".join(fields) + "\n"


def cmd_inspect(args: argparse.Namespace) -> None:
    from nmt.outputs import check_output, write_output
    from nmt.reporting.inside import inspect_sentence, render
    from nmt.translate import Translator

    output = Path(args.output)
    if output.suffix not in (".html", ".png"):
        raise UsageError(f"-o {output}: name an .html page or a .png picture")
    if not args.sentence.strip():  # as the server's /v1/inspect: nothing to look inside
        raise UsageError("the sentence is empty: nothing to inspect")
    beam = SearchOptions.parse({"beam": args.beam}).beam
    reads = files_read(args)
    check_output(output, reads)
    translator = Translator.load(args.model, device=args.device, precision=args.precision)
    inspection = inspect_sentence(translator, args.sentence, beam=beam)
    write_output(output, render(inspection, output.suffix[1:]), reads=reads)
    log.info("translation: %s", inspection.translation)
    log.info("wrote %s", output)


def cmd_average(args: argparse.Namespace) -> None:
    from nmt.checkpoint import average
    from nmt.outputs import check_output
    from nmt.training.run_dir import kept_checkpoints

    if args.output.endswith(".gz"):
        raise UsageError(f"-o {args.output}: a checkpoint is written uncompressed; name it .pt")
    checkpoints = []
    for given in map(Path, args.checkpoints):  # a run folder: the step-N.pt it kept
        kept = kept_checkpoints(given) if given.is_dir() else [given]
        if not kept:
            raise UsageError(
                f"run folder {given} keeps no step checkpoints (train.keep_last=0): name "
                "checkpoint files, or train with train.keep_last=N"
            )
        checkpoints += kept
    check_output(args.output, files_read(args))
    average(checkpoints, Path(args.output))
    log.info("wrote the average of %d checkpoints to %s", len(checkpoints), args.output)


def cmd_plot(args: argparse.Namespace) -> None:
    from nmt.outputs import check_output, write_output
    from nmt.reporting.curves import plot_learning_curves

    run = Path(args.run)
    if not run.is_dir():
        what = "is not a directory" if run.exists() else "does not exist"
        raise UsageError(f"run folder {run} {what}")
    out = args.output or str(run / "curves.png")
    reads = files_read(args)
    check_output(out, reads)
    write_output(out, plot_learning_curves(run / "metrics.jsonl"), reads=reads)
    log.info("wrote %s", out)


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        from nmt.serve import server
        from nmt.serve.app import build_app
        from nmt.serve.keys import KeyStore
        from nmt.serve.limits import Limits
    except ImportError as err:  # the extra is not installed
        raise UsageError(f"nmt serve needs {err.name}: pip install 'nmt[serve]'") from None
    from nmt.translate import Translator

    try:  # a clear error now for an address taken or not this machine's, not uvicorn's later
        socket.create_server((args.host, args.port)).close()
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    keys = KeyStore(args.api_keys) if args.api_keys else None
    glossary = _glossary(args)
    options = {"device": args.device, "precision": args.precision}
    translators = [Translator.load(run, **options) for run in args.model]
    limits = Limits(
        max_pending=args.max_pending,
        max_wait_ms=args.max_wait_ms,
        batch_lines=args.max_batch_lines,
        char_limit=args.char_limit,
        batch_limit=args.batch_limit,
        max_body_bytes=args.max_body_bytes,
        max_file_bytes=args.max_file_bytes,
        file_keep_seconds=args.file_keep_seconds,
        body_timeout=args.body_timeout,
        shutdown_grace=args.shutdown_grace,
        req_limit=args.req_limit,
    )
    origins = tuple(args.cors_origins)
    app = build_app(translators, limits, origins=origins, keys=keys, glossary=glossary)
    log.info("serving %s on http://%s:%d", ", ".join(args.model), args.host, args.port)
    server.run(app, args.host, args.port)


def cmd_serve_keys(args: argparse.Namespace) -> None:
    from nmt.serve.keys import KeyStore

    store = KeyStore(args.db)
    if args.action == "add":
        key = store.add(args.req_limit, args.key, args.char_limit)
        print(key)
    elif args.action == "remove":
        if not store.remove(args.key):
            raise UsageError(f"no key {args.key!r} in {args.db}")
        log.info("removed %s", args.key)
    else:
        for key, req_limit, char_limit in store.keys():
            print(f"{key}\treq_limit={req_limit}\tchar_limit={char_limit or '-'}")

"""What each `nmt` subcommand does, given its parsed arguments (`nmt.cli` parses them).

Each hands off to library functions; the checks here are the ones only the command
line has: options that cannot apply together, inputs that must exist before a model
is loaded, outputs that must not be inputs (`nmt.outputs`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
from pathlib import Path

from nmt.errors import NmtError
from nmt.options import SEARCH, SearchOptions

log = logging.getLogger("nmt")


class UsageError(NmtError):
    """Options that cannot apply together."""


def cmd_train(args: argparse.Namespace) -> None:
    from nmt.config import Config
    from nmt.training.train import train

    # --resume without CONFIG: the run's own config with the overrides on top
    cfg = Config.from_yaml(args.config, args.overrides) if args.config else None
    resume = {"resume": args.resume, "reset_optimizer": args.reset_optimizer}
    overrides = [] if args.config else args.overrides
    train(cfg, Path(args.out), overrides=overrides, device=args.device, **resume)


def cmd_translate(args: argparse.Namespace) -> None:
    from nmt.data import decode_lines, iter_lines
    from nmt.outputs import check_output, output_file
    from nmt.text.documents import Summary, jsonl_lines, translate_lines
    from nmt.text.markup import translate_html
    from nmt.translate import Translator

    search = SearchOptions.parse({name: getattr(args, name) for name in SEARCH})
    if search.nbest > 1 and (args.scores or args.alignments):
        raise UsageError("--scores and --alignments need --nbest 1 (n-best rows hold scores)")
    if args.format == "html" and (search.nbest > 1 or args.scores or args.alignments):
        raise UsageError("--format html writes one document: no --nbest, --scores, --alignments")
    for item in args.overrides:  # the model's own settings came with its weights
        if not item.startswith("decode."):
            raise UsageError(f"{item}: translate takes decode.* overrides only")
    source = None if args.input == "-" else _existing_file(args.input, "input ")
    fmt = args.format or ("jsonl" if args.input.endswith((".jsonl", ".jsonl.gz")) else "text")
    terms = _terms(args, fmt, search)
    if args.output != "-":
        check_output(Path(args.output), [source] if source else [])
    load = {"device": args.device, "precision": args.precision, "overrides": args.overrides}
    translator = Translator.load(args.model, **load)
    if terms["glossary"]:  # a term the model cannot write: refused before any line
        terms["glossary"].check(translator)
    options = {**dataclasses.asdict(search), "split": not args.no_split, "summary": Summary()}
    options.update(terms)
    to_stdout = contextlib.nullcontext(sys.stdout)
    with to_stdout if args.output == "-" else output_file(Path(args.output)) as out:
        if fmt == "html":  # the whole input is one page
            out.write(translate_html(translator, _read_page(source, args.errors), **options))
        else:
            if source:
                lines = iter_lines(source, args.errors)
            else:
                lines = decode_lines(sys.stdin.buffer, "<stdin>", args.errors)
            if fmt == "jsonl":
                lines = jsonl_lines(lines, str(source or "<stdin>"), translator.targets)
            progress = _progress_bar("lines")
            for line_id, hyps in enumerate(translate_lines(translator, lines, **options)):
                out.write(_format(line_id, hyps, search.nbest, args))
                progress.update(1)
            progress.close()
    log.info("translated %s", options["summary"])


def _glossary(args: argparse.Namespace):
    """--glossary FILE (with --glossary-ignore-case), read; None without."""
    from nmt.text.glossary import Glossary

    if args.glossary_ignore_case and not args.glossary:
        raise UsageError("--glossary-ignore-case applies only with --glossary")
    if not args.glossary:
        return None
    path = _existing_file(args.glossary, "glossary ")
    return Glossary.read(path, ignore_case=args.glossary_ignore_case)


def _terms(args: argparse.Namespace, fmt: str, search: SearchOptions) -> dict:
    """translate's --glossary, --avoid and --prefix, read and checked before any model
    is loaded: the `glossary` and `common` options of `nmt.text.documents`."""
    from nmt.data import read_lines
    from nmt.options import Constraints

    if args.prefix is not None and fmt == "html":
        raise UsageError("--prefix begins each line: not with --format html")
    given = [f"--{x}" for x in ("glossary", "avoid", "prefix") if getattr(args, x) is not None]
    if search.sampling and (given or fmt == "jsonl"):
        what = " and ".join(given) or "jsonl input"
        raise UsageError(f"{what}: constraints need beam search, not --sample-temperature")
    glossary = _glossary(args)
    avoid = []
    if args.avoid:
        for number, line in enumerate(read_lines(_existing_file(args.avoid, "--avoid ")), 1):
            try:
                avoid += Constraints(avoid=(line.strip(),)).avoid if line.strip() else ()
            except NmtError as err:
                raise UsageError(f"{args.avoid} line {number}: {err}") from None
    common = Constraints(avoid=tuple(avoid), prefix=args.prefix or "")
    return {"glossary": glossary, "common": common or None}


def _read_page(source: Path | None, errors: str) -> str:
    from nmt.data import DataError

    raw = source.read_bytes() if source else sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{source or '<stdin>'} line {line}: not valid UTF-8") from None


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


def _progress_bar(unit: str):
    from tqdm import tqdm

    return tqdm(unit=f" {unit}", disable=not sys.stderr.isatty(), file=sys.stderr)


def cmd_inspect(args: argparse.Namespace) -> None:
    from nmt.outputs import check_output, write_output
    from nmt.reporting.inside import inspect_sentence, render
    from nmt.translate import Translator

    output = Path(args.output)
    if output.suffix not in (".html", ".png"):
        raise UsageError(f"-o {output}: name an .html page or a .png picture")
    beam = SearchOptions.parse({"beam": args.beam}).beam
    check_output(output)
    translator = Translator.load(args.model, device=args.device, precision=args.precision)
    inspection = inspect_sentence(translator, args.sentence, beam=beam)
    write_output(output, render(inspection, output.suffix[1:]))
    log.info("translation: %s", inspection.translation)
    log.info("wrote %s", output)


def cmd_average(args: argparse.Namespace) -> None:
    from nmt.checkpoint import average
    from nmt.outputs import check_output

    check_output(Path(args.output), [Path(p) for p in args.checkpoints])
    average([Path(p) for p in args.checkpoints], Path(args.output))
    log.info("wrote the average of %d checkpoints to %s", len(args.checkpoints), args.output)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from nmt.data import DataError
    from nmt.outputs import check_output, write_output
    from nmt.reporting.evaluation import evaluate, render

    if _load_options(args) and not args.model:
        given = " and ".join(f"--{k} {v}" for k, v in _load_options(args).items())
        raise UsageError(f"{given}: only with --model")
    if args.output:
        check_output(Path(args.output), _evaluation_inputs(args))
    refs = [(path, _read_nonempty(path)) for path in args.ref]  # (name, lines)
    src = _read_nonempty(args.src) if args.src else None
    hyp_paths = list(args.hyp)
    if args.model:  # translate --src, or the run's own test split (data.test)
        src, refs, translated = _translate_for_evaluation(args, src, refs)
        hyp_paths.append(str(translated))
    if not hyp_paths:
        raise DataError("give --hyp files, or --model")
    if not refs:
        raise DataError("give --ref files, or --model without --src (its data.test split)")
    systems = list(zip(_system_names(hyp_paths), map(_read_nonempty, hyp_paths), strict=True))
    for path, (_, hyps) in zip(hyp_paths, systems, strict=True):
        for ref_name, ref in refs:
            if len(hyps) != len(ref):
                raise DataError(f"{path} has {len(hyps)} lines but {ref_name} has {len(ref)}")
    first_name, first = refs[0]
    if src is not None and len(src) != len(first):
        raise DataError(f"{args.src} has {len(src)} lines but {first_name} has {len(first)}")
    tests = {"test": args.paired, "samples": args.samples, "chrf_plus": args.chrf_plus}
    report = evaluate(
        systems, [lines for _, lines in refs], src=src, metrics=tuple(args.metrics), **tests
    )
    if args.output:  # the report goes to the file, a text summary to the terminal
        write_output(Path(args.output), render(report, args.format))
        sys.stdout.write(render(report, "text"))
    else:
        sys.stdout.write(render(report, args.format))


def _load_options(args: argparse.Namespace) -> dict[str, str]:
    """evaluate's --device and --precision as given (else Translator.load's defaults)."""
    return {key: getattr(args, key) for key in ("device", "precision") if getattr(args, key)}


def _evaluation_inputs(args: argparse.Namespace) -> list[Path]:
    return [Path(p) for p in [*args.hyp, *args.ref, *([args.src] if args.src else [])]]


def _system_names(paths: list[str]) -> list[str]:
    """Each system's file name, or its path as given where two files share a name
    (runs/a/test.en and runs/b/test.en)."""
    names = [Path(path).name for path in paths]
    return [path if names.count(Path(path).name) > 1 else Path(path).name for path in paths]


def _existing_file(path: str, role: str = "") -> Path:
    """`path`, checked before any model is loaded for it; `role` starts the message."""
    from nmt.data import DataError

    if not Path(path).is_file():
        what = "is not a file" if Path(path).exists() else "does not exist"
        raise DataError(f"{role}{path} {what}")
    return Path(path)


def _read_nonempty(path: str) -> list[str]:
    from nmt.data import DataError, read_lines

    lines = read_lines(_existing_file(path))
    if not lines:
        raise DataError(f"{path} is empty")
    return lines


def _translate_for_evaluation(args, src, refs: list) -> tuple[list[str], list, Path]:
    """Translates --src, or without it the run's data.test split (its references then
    replacing --ref's), into a .hyp file -> the source, the (name, lines) references, the file."""
    from nmt.data import load_split
    from nmt.outputs import check_output, write_output
    from nmt.translate import Translator

    translator = Translator.load(args.model, **_load_options(args))
    if src is None:
        data = translator.cfg.data
        test = load_split(data, data.test)
        src, refs = test["src"][:], [(f"{data.test} ({data.tgt_lang})", test["tgt"][:])]
        name = f"{Path(data.test).name}.hyp.{data.tgt_lang}"  # beside the report
        hyp = Path(args.output).parent / name if args.output else Path(name)
    else:
        hyp = Path(args.output).with_suffix(".hyp") if args.output else Path(args.src + ".hyp")
    check_output(hyp, _evaluation_inputs(args))
    hyps = translator.translate(src)
    write_output(hyp, "".join(h[0].text + "\n" for h in hyps))
    log.info("wrote %s", hyp)
    return src, refs, hyp


def cmd_plot(args: argparse.Namespace) -> None:
    from nmt.outputs import check_output, write_output
    from nmt.reporting.curves import plot_learning_curves

    out = Path(args.output or Path(args.run) / "curves.png")
    check_output(out)
    write_output(out, plot_learning_curves(Path(args.run) / "metrics.jsonl"))
    log.info("wrote %s", out)


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from nmt.serve.app import Limits, build_app
    except ImportError as err:  # the extra is not installed
        raise UsageError(f"nmt serve needs {err.name}: pip install 'nmt[serve]'") from None
    from nmt.translate import Translator

    try:  # a clear error now for an address taken or not this machine's, not uvicorn's later
        socket.create_server((args.host, args.port)).close()
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    glossary = _glossary(args)
    options = {"device": args.device, "precision": args.precision}
    translators = [Translator.load(run, **options) for run in args.model]
    limits = Limits(
        max_pending=args.max_pending, max_wait_ms=args.max_wait_ms, batch_lines=args.max_batch_lines
    )
    app = build_app(translators, limits, glossary)
    log.info("serving %s on http://%s:%d", ", ".join(args.model), args.host, args.port)
    # uvicorn answers what it accepted on SIGTERM, then raises the signal again for the
    # handler it found: this one, so that a stop asked for is a success (status 0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)

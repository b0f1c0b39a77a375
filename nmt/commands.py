"""What each `nmt` subcommand does, given its parsed arguments (`nmt.cli` parses them).

Each hands off to library functions; the checks here are the ones only the command
line has: options that cannot apply together, inputs that must exist before a model
is loaded, outputs that must not be inputs (`nmt.outputs`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
from pathlib import Path

from nmt.config import NmtError

log = logging.getLogger("nmt")


class UsageError(NmtError):
    """Options that cannot apply together."""


def cmd_train(args: argparse.Namespace) -> None:
    from nmt.config import Config
    from nmt.train import train

    # --resume without CONFIG: the run's own config with the overrides on top
    cfg = Config.from_yaml(args.config, args.overrides) if args.config else None
    resume = {"resume": args.resume, "reset_optimizer": args.reset_optimizer}
    overrides = [] if args.config else args.overrides
    train(cfg, Path(args.out), overrides=overrides, device=args.device, **resume)


def cmd_translate(args: argparse.Namespace) -> None:
    from nmt.data import decode_lines, iter_lines
    from nmt.documents import Summary, translate_lines
    from nmt.markup import translate_html
    from nmt.outputs import check_output, output_file
    from nmt.translate import Sampling, Translator

    if args.nbest > 1 and (args.scores or args.alignments):
        raise UsageError("--scores and --alignments need --nbest 1 (n-best rows hold scores)")
    drawn = args.sample_temperature
    if drawn and args.nbest > 1:
        raise UsageError("sampling draws one output per line: drop --nbest")
    if args.sample_top_k and not drawn:
        raise UsageError("--sample-top-k needs --sample-temperature > 0")
    if args.beam is not None and args.nbest > args.beam:
        raise UsageError(f"--nbest {args.nbest} needs --beam {args.nbest} or more")
    if args.format == "html" and (args.nbest > 1 or args.scores or args.alignments):
        raise UsageError("--format html writes one document: no --nbest, --scores, --alignments")
    for item in args.overrides:  # the model's own settings came with its weights
        if not item.startswith("decode."):
            raise UsageError(f"{item}: translate takes decode.* overrides only")
    source = None if args.input == "-" else _existing_file(args.input, "input ")
    if args.output != "-":
        check_output(Path(args.output), [source] if source else [])
    translator = Translator.load(args.model, device=args.device, precision=args.precision)
    if args.overrides:
        translator.cfg = translator.cfg.replace(args.overrides)
    sampling = Sampling(drawn, args.sample_top_k) if drawn else None
    options = {"beam": args.beam, "nbest": args.nbest, "alpha": args.alpha, "sampling": sampling}
    options.update(max_tokens=args.max_tokens, split=not args.no_split, summary=Summary())
    to_stdout = contextlib.nullcontext(sys.stdout)
    with to_stdout if args.output == "-" else output_file(Path(args.output)) as out:
        if args.format == "html":  # the whole input is one page
            out.write(translate_html(translator, _read_page(source, args.errors), **options))
        else:
            if source:
                lines = iter_lines(source, args.errors)
            else:
                lines = decode_lines(sys.stdin.buffer, "<stdin>", args.errors)
            progress = _progress_bar("lines")
            for line_id, hyps in enumerate(translate_lines(translator, lines, **options)):
                out.write(_format(line_id, hyps, args))
                progress.update(1)
            progress.close()
    log.info("translated %s", options["summary"])


def _read_page(source: Path | None, errors: str) -> str:
    from nmt.data import DataError

    raw = source.read_bytes() if source else sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{source or '<stdin>'} line {line}: not valid UTF-8") from None


def _format(line_id: int, hyps: list, args: argparse.Namespace) -> str:
    """One line per input line, or with --nbest N, N `id ||| text ||| score` rows."""
    if args.nbest > 1:
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
    from nmt.inside import inspect_sentence, render
    from nmt.outputs import check_output, write_output
    from nmt.translate import Translator

    output = Path(args.output)
    if output.suffix not in (".html", ".png"):
        raise UsageError(f"-o {output}: name an .html page or a .png picture")
    check_output(output)
    translator = Translator.load(args.model, device=args.device)
    inspection = inspect_sentence(translator, args.sentence, beam=args.beam)
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
    from nmt.report import evaluate, render

    if _load_options(args) and not args.model:
        given = " and ".join(f"--{k} {v}" for k, v in _load_options(args).items())
        raise UsageError(f"{given}: only with --model")
    if args.output:
        check_output(Path(args.output), _evaluation_inputs(args))
    refs = [_read_nonempty(path) for path in args.ref]
    src = _read_nonempty(args.src) if args.src else None
    if args.model:  # translate --src, or the run's own test split (data.test)
        src, refs = _translate_for_evaluation(args, src, refs)
    if not args.hyp:
        raise DataError("give --hyp files, or --model")
    if not refs:
        raise DataError("give --ref files, or --model without --src (its data.test split)")
    systems = list(zip(_system_names(args.hyp), map(_read_nonempty, args.hyp), strict=True))
    for path, (_, hyps) in zip(args.hyp, systems, strict=True):
        for ref_path, ref in zip(args.ref, refs, strict=True):
            if len(hyps) != len(ref):
                raise DataError(f"{path} has {len(hyps)} lines but {ref_path} has {len(ref)}")
    if src is not None and len(src) != len(refs[0]):
        raise DataError(f"{args.src} has {len(src)} lines but {args.ref[0]} has {len(refs[0])}")
    tests = {"test": args.paired, "samples": args.samples, "chrf_plus": args.chrf_plus}
    report = evaluate(systems, refs, src=src, metrics=tuple(args.metrics), **tests)
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


def _translate_for_evaluation(args, src, refs) -> tuple[list[str], list[list[str]]]:
    """Translates --src, or without it the run's data.test split (its references
    replacing --ref), into a .hyp file added to --hyp; -> the source and references."""
    from nmt.data import load_split
    from nmt.outputs import check_output, write_output
    from nmt.translate import Translator

    translator = Translator.load(args.model, **_load_options(args))
    if src is None:
        data = translator.cfg.data
        test = load_split(data, data.test)
        src, refs, args.ref = test["src"][:], [test["tgt"][:]], [f"{data.test} ({data.tgt_lang})"]
        name = f"{Path(data.test).name}.hyp.{data.tgt_lang}"  # beside the report
        hyp = Path(args.output).parent / name if args.output else Path(name)
    else:
        hyp = Path(args.output).with_suffix(".hyp") if args.output else Path(args.src + ".hyp")
    check_output(hyp, _evaluation_inputs(args))
    hyps = translator.translate(src)
    write_output(hyp, "".join(h[0].text + "\n" for h in hyps))
    log.info("wrote %s", hyp)
    args.hyp = [*args.hyp, str(hyp)]
    return src, refs


def cmd_plot(args: argparse.Namespace) -> None:
    from nmt.metrics import plot_learning_curves
    from nmt.outputs import check_output, write_output

    out = Path(args.output or Path(args.run) / "curves.png")
    check_output(out)
    write_output(out, plot_learning_curves(Path(args.run) / "metrics.jsonl"))
    log.info("wrote %s", out)


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from nmt.serve import Limits, build_app
    except ImportError as err:  # the extra is not installed
        raise UsageError(f"nmt serve needs {err.name}: pip install 'nmt[serve]'") from None
    from nmt.translate import Translator

    try:  # a clear error now for an address taken or not this machine's, not uvicorn's later
        socket.create_server((args.host, args.port)).close()
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    options = {"device": args.device, "precision": args.precision}
    translators = [Translator.load(run, **options) for run in args.model]
    limits = Limits(
        max_pending=args.max_pending, max_wait_ms=args.max_wait_ms, batch_lines=args.max_batch_lines
    )
    app = build_app(translators, limits)
    log.info("serving %s on http://%s:%d", ", ".join(args.model), args.host, args.port)
    # uvicorn answers what it accepted on SIGTERM, then raises the signal again for the
    # handler it found: this one, so that a stop asked for is a success (status 0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)

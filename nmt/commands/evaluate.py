"""`nmt evaluate`: score translations (and with --model, make them first).

Two outputs: the report (-o, its format from its suffix unless --format says; stdout
without -o) and, with --model, the translations (--translations, or a default beside
the report or the source that is never overwritten: an existing one is refused).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from nmt.commands.files import UsageError, existing_file, files_read, read_nonempty

log = logging.getLogger("nmt")

# a report's format by its file's suffix (before .gz); other suffixes need --format
REPORT_FORMATS = {
    "": "text",
    ".txt": "text",
    ".json": "json",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
}


def cmd_evaluate(args: argparse.Namespace) -> None:
    from nmt.data import DataError
    from nmt.outputs import check_output, write_output
    from nmt.reporting.evaluation import evaluate, render

    if _load_options(args) and not args.model:
        given = " and ".join(f"--{k} {v}" for k, v in _load_options(args).items())
        raise UsageError(f"{given}: only with --model")
    if args.translations and not args.model:
        raise UsageError(f"--translations {args.translations}: only with --model")
    fmt = report_format(args)
    for path in args.hyp:  # before minutes of translating with --model
        existing_file(path, "hypothesis ")
    reads = files_read(args)
    if args.output:
        check_output(args.output, reads)
    refs = [(path, read_nonempty(path, "reference ")) for path in args.ref]  # (name, lines)
    src = read_nonempty(args.src, "source ") if args.src else None
    hyp_paths = list(args.hyp)
    if args.model:  # translate --src, or the run's own test split (data.test)
        src, refs, translated = _translate_for_evaluation(args, src, refs, reads)
        hyp_paths.append(str(translated))
    if not hyp_paths:
        raise DataError("give --hyp files, or --model")
    if not refs:
        raise DataError("give --ref files, or --model without --src (its data.test split)")
    hyps = [read_nonempty(path, "hypothesis ") for path in hyp_paths]
    systems = list(zip(_system_names(hyp_paths), hyps, strict=True))
    for path, (_, lines) in zip(hyp_paths, systems, strict=True):
        for ref_name, ref in refs:
            if len(lines) != len(ref):
                raise DataError(f"{path} has {len(lines)} lines but {ref_name} has {len(ref)}")
    first_name, first = refs[0]
    if src is not None and len(src) != len(first):
        raise DataError(f"{args.src} has {len(src)} lines but {first_name} has {len(first)}")
    tests = {"test": args.paired, "samples": args.samples, "chrf_plus": args.chrf_plus}
    report = evaluate(
        systems, [lines for _, lines in refs], src=src, metrics=tuple(args.metrics), **tests
    )
    if args.output:  # the report goes to the file, a text summary to the terminal
        write_output(args.output, render(report, fmt), reads=reads)
        write_output("-", render(report, "text"))
    else:
        write_output("-", render(report, fmt))


def report_format(args: argparse.Namespace) -> str:
    """--format, or the report's own suffix (`scores.json`: json; `.gz` compresses)."""
    if args.format or not args.output:
        return args.format or "text"
    suffix = Path(args.output.removesuffix(".gz")).suffix.lower()
    if suffix not in REPORT_FORMATS:
        known = ", ".join(s for s in REPORT_FORMATS if s)
        raise UsageError(
            f"-o {args.output}: no report format is named {suffix}; give --format, or name "
            f"the report {known} (or no suffix: text)"
        )
    return REPORT_FORMATS[suffix]


def _load_options(args: argparse.Namespace) -> dict[str, str]:
    """evaluate's --device and --precision as given (else Translator.load's defaults)."""
    return {key: getattr(args, key) for key in ("device", "precision") if getattr(args, key)}


def _system_names(paths: list[str]) -> list[str]:
    """Each system's file name, or its path as given where two files share a name
    (runs/a/test.en and runs/b/test.en)."""
    names = [Path(path).name for path in paths]
    return [path if names.count(Path(path).name) > 1 else Path(path).name for path in paths]


def _translate_for_evaluation(args, src, refs: list, reads: list[Path]) -> tuple:
    """Translates --src, or without it the run's data.test split (its references then
    replacing --ref's; its files join `reads`) -> the source, the (name, lines)
    references, and the file the translations were written to."""
    from nmt.data import load_split, split_files
    from nmt.outputs import check_output, write_output
    from nmt.translate import Translator

    translator = Translator.load(args.model, **_load_options(args))
    report_dir = Path(args.output).parent if args.output else Path()
    if src is None:
        data = translator.cfg.data
        if not data.hub:
            reads += split_files(data, data.test)
        test = load_split(data, data.test)
        src, refs = test["src"][:], [(f"{data.test} ({data.tgt_lang})", test["tgt"][:])]
        default = report_dir / f"{Path(data.test).name}.hyp.{data.tgt_lang}"
    else:
        default = Path(args.output).with_suffix(".hyp") if args.output else Path(args.src + ".hyp")
    hyp = Path(args.translations or default)
    if not args.translations and hyp.exists():
        raise UsageError(
            f"{hyp} exists: evaluate writes its translations there only if told, with "
            f"--translations {hyp} (or another file)"
        )
    if args.output and _same_place(hyp, Path(args.output)):
        raise UsageError(f"the report and the translations would both be {hyp}: see --help")
    if args.output:
        check_output(args.output, reads)  # with the test split's files now
    check_output(hyp, reads)
    hyps = translator.translate(src)
    write_output(hyp, "".join(h[0].text + "\n" for h in hyps), reads=reads)
    log.info("wrote %s", hyp)
    return src, refs, hyp


def _same_place(a: Path, b: Path) -> bool:
    """Whether two outputs are one file: the same path, or (existing) the same file."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)

"""nmt: train LSTM translation models, translate files, score translations.

Each subcommand hands off to one library function. Bad input (config keys,
data files, checkpoints) ends with a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("nmt")


def cmd_train(args: argparse.Namespace) -> None:
    from nmt.config import Config
    from nmt.train import train

    # with --resume, the run's own config with the overrides on top
    cfg = None if args.resume else Config.from_yaml(args.config, args.overrides)
    resume = {"resume": args.resume, "reset_optimizer": args.reset_optimizer}
    overrides = args.overrides if args.resume else []
    train(cfg, Path(args.out), overrides=overrides, device=args.device, **resume)


def cmd_translate(args: argparse.Namespace) -> None:
    from nmt.data import decode_lines, iter_lines
    from nmt.translate import Sampling, Translator

    translator = Translator.load(args.model, device=args.device, precision=args.precision)
    if args.overrides:
        translator.cfg = translator.cfg.replace(args.overrides)
    if args.input == "-":
        lines = decode_lines(sys.stdin.buffer, "<stdin>", args.errors)
    else:
        lines = iter_lines(Path(args.input), args.errors)
    drawn = args.sample_temperature
    sampling = Sampling(drawn, args.sample_top_k) if drawn else None
    options = {"beam": args.beam, "nbest": args.nbest, "alpha": args.alpha}
    results = translator.translate_stream(
        lines, **options, max_tokens=args.max_tokens, sampling=sampling
    )
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    progress = _progress_bar("sentences")
    try:
        for line_id, hyps in enumerate(results):
            out.write(_format(line_id, hyps, args))
            progress.update(1)
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()


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
    from nmt.inside import inspect_sentence, write
    from nmt.translate import Translator

    translator = Translator.load(args.model, device=args.device)
    inspection = inspect_sentence(translator, args.sentence, beam=args.beam)
    write(inspection, Path(args.output))
    log.info("translation: %s", inspection.translation)
    log.info("wrote %s", args.output)


def cmd_average(args: argparse.Namespace) -> None:
    from nmt.checkpoint import average

    average([Path(p) for p in args.checkpoints], Path(args.output))
    log.info("wrote the average of %d checkpoints to %s", len(args.checkpoints), args.output)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from nmt.data import DataError
    from nmt.report import evaluate, render

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
        Path(args.output).write_text(render(report, args.format), encoding="utf-8")
        sys.stdout.write(render(report, "text"))
    else:
        sys.stdout.write(render(report, args.format))


def _system_names(paths: list[str]) -> list[str]:
    """Each system's file name, or its path as given where two files share a name
    (runs/a/test.en and runs/b/test.en)."""
    names = [Path(path).name for path in paths]
    return [path if names.count(Path(path).name) > 1 else Path(path).name for path in paths]


def _read_nonempty(path: str) -> list[str]:
    from nmt.data import DataError, read_lines

    if not Path(path).is_file():
        raise DataError(f"{path} does not exist")
    lines = read_lines(Path(path))
    if not lines:
        raise DataError(f"{path} is empty")
    return lines


def _translate_for_evaluation(args, src, refs) -> tuple[list[str], list[list[str]]]:
    """Translates --src, or without it the run's data.test split (its references
    replacing --ref), into a .hyp file added to --hyp; -> the source and references."""
    from nmt.data import load_split
    from nmt.translate import Translator

    translator = Translator.load(args.model, device=args.device, precision=args.precision)
    if src is None:
        data = translator.cfg.data
        test = load_split(data, data.test)
        src, refs, args.ref = test["src"][:], [test["tgt"][:]], [f"{data.test} ({data.tgt_lang})"]
        name = f"{Path(data.test).name}.hyp.{data.tgt_lang}"  # beside the report
        hyp = Path(args.output).parent / name if args.output else Path(name)
    else:
        hyp = Path(args.output).with_suffix(".hyp") if args.output else Path(args.src + ".hyp")
    hyps = translator.translate(src)
    hyp.write_text("".join(h[0].text + "\n" for h in hyps), encoding="utf-8")
    log.info("wrote %s", hyp)
    args.hyp = [*args.hyp, str(hyp)]
    return src, refs


def cmd_plot(args: argparse.Namespace) -> None:
    from nmt.metrics import plot_learning_curves

    out = Path(args.output or Path(args.run) / "curves.png")
    plot_learning_curves(Path(args.run) / "metrics.jsonl", out)
    log.info("wrote %s", out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nmt", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML file, see configs/ (not needed with --resume)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.lr=3e-4")
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--reset-optimizer", action="store_true", help="with --resume: fresh optimizer")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("translate", help="translate text with trained models")
    p.add_argument("model", nargs="+", help="run directory or checkpoint; several: an ensemble")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--beam", type=int, help="beam size (1: greedy; default: decode.beam_size)")
    p.add_argument("--nbest", type=int, default=1, help="write N `id ||| text ||| score` rows")
    p.add_argument("--alpha", type=float, help="length penalty (default: decode.alpha)")
    p.add_argument("--max-tokens", type=int, help="source tokens per batch")
    p.add_argument("--scores", action="store_true", help="append each line's score after a tab")
    p.add_argument("--alignments", action="store_true", help="append i-j alignments after a tab")
    p.add_argument("--sample-temperature", type=float, default=0.0, help="sample, not search")
    p.add_argument("--sample-top-k", type=int, default=0, help="sample among the k most likely")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    _add_precision(p)
    errors = "invalid UTF-8: stop naming the line, or replace it"
    p.add_argument("--errors", choices=["strict", "replace"], default="strict", help=errors)
    p.set_defaults(func=cmd_translate, overrides=[])

    p = sub.add_parser("inspect", help="draw the attention, gates and memory cells of a sentence")
    p.add_argument("model", help="run directory or checkpoint")
    p.add_argument("sentence", help="a source sentence, raw text")
    p.add_argument("-o", "--output", default="inspect.html", help=".html page or .png picture")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("average", help="average the parameters of checkpoints of one model")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("-o", "--output", required=True, help="the averaged checkpoint")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("evaluate", help="score translations with SacreBLEU, with significance")
    p.add_argument("--hyp", action="append", default=[], help="a system's output; repeatable")
    p.add_argument("--ref", action="append", default=[], help="a reference; repeat for several")
    p.add_argument("--src", help="the source: enables BLEU by source length")
    p.add_argument("--model", help="first translate --src (or the run's data.test) with it")
    metrics = ["bleu", "chrf", "ter"]
    p.add_argument("--metrics", nargs="+", default=metrics, choices=metrics)
    p.add_argument("--chrf-plus", action="store_true", help="chrF++ (word bigrams) for chrf")
    paired = "paired bootstrap resampling or approximate randomization"
    p.add_argument("--paired", choices=["bs", "ar"], default="bs", help=paired)
    p.add_argument("--samples", type=int, default=0, help="resamples/trials (0: sacrebleu's)")
    p.add_argument("--format", choices=["text", "json", "markdown", "html"], default="text")
    p.add_argument("-o", "--output", help="write the report here")
    p.add_argument("--device", default="cpu", help="for --model")
    _add_precision(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="draw the learning curves of a run")
    p.add_argument("run", help="run directory (reads its metrics.jsonl)")
    p.add_argument("-o", "--output", help="PNG file (default: RUN/curves.png)")
    p.set_defaults(func=cmd_plot)
    return parser


def _add_precision(p: argparse.ArgumentParser) -> None:
    text = "int8: the decoder's products in 8-bit integers (CPU only; docs/benchmarks.md)"
    p.add_argument(
        "--precision", choices=["fp32", "bf16", "fp16", "int8"], default="fp32", help=text
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    # overrides may come after options too: `nmt train CFG --out R train.lr=3e-4`
    args, extra = parser.parse_known_args(argv)
    if args.func in (cmd_train, cmd_translate):  # decode.* overrides work for translate too
        unknown = [item for item in extra if item.startswith("-") or "=" not in item]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.func is cmd_translate:  # positional KEY=VALUE items land among the models
        args.overrides += [m for m in args.model if "=" in m and not Path(m).exists()]
        args.model = [m for m in args.model if m not in args.overrides]
    if args.func is cmd_train:
        if args.config and "=" in args.config:  # `--resume train.max_steps=9`: no config given
            args.overrides.insert(0, args.config)
            args.config = None
        if args.config is None and not args.resume:
            parser.error("train needs a CONFIG file (or --resume)")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from nmt.config import NmtError

    try:
        args.func(args)
    except NmtError as err:
        print(f"nmt: error: {err}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as err:
        print(f"nmt: error: {err.filename or err}: no such file", file=sys.stderr)
        sys.exit(2)

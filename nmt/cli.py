"""nmt: train LSTM translation models, translate files, score translations.

The parser and the one boundary where errors become messages: bad input (options,
config keys, data files, checkpoints, outputs) ends with a one-line error and exit
status 2; every option is checked as it is parsed. What each subcommand then does is
`nmt.commands`'.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from nmt.commands import (
    cmd_average,
    cmd_evaluate,
    cmd_inspect,
    cmd_plot,
    cmd_serve,
    cmd_train,
    cmd_translate,
)
from nmt.errors import NmtError
from nmt.options import DEVICE_HELP, PRECISION_HELP, PRECISIONS, SEARCH


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line like every other error of nmt's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(least: float, kind: type = int, most: float = math.inf):
    """An argparse type: a finite `kind` in [least, most]; the bounds stay readable on
    the function (`.least`, `.most`, `.kind`), so tests can generate what it refuses."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {text}")
        if value > most:
            raise argparse.ArgumentTypeError(f"must be <= {most}, got {text}")
        return value

    convert.least, convert.most, convert.kind = least, most, kind
    convert.__name__ = f"{kind.__name__} >= {least}"
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nmt", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML file, see configs/ (not needed with --resume)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.lr=3e-4")
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--reset-optimizer", action="store_true", help="with --resume: fresh optimizer")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("translate", help="translate text with trained models")
    p.add_argument("model", nargs="+", help="run directory or checkpoint; several: an ensemble")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    _add_search(p, SEARCH.values())
    p.add_argument("--scores", action="store_true", help="append each line's score after a tab")
    p.add_argument("--alignments", action="store_true", help="append i-j alignments after a tab")
    _add_device(p)
    page = (
        "text: one output line per input line; html: the input is one page, markup kept;"
        ' jsonl: a line is {"text": ..., "constraints": [...], "avoid": [...], "prefix": ...}'
        " (default: jsonl for an -i file named .jsonl or .jsonl.gz, else text)"
    )
    p.add_argument("--format", choices=["text", "html", "jsonl"], help=page)
    _add_glossary(p)
    p.add_argument("--avoid", metavar="FILE", help="phrases the output must not hold, one a line")
    p.add_argument("--prefix", metavar="TEXT", help="every output line begins with TEXT")
    no_split = "the input is one sentence a line: do not split lines into sentences"
    p.add_argument("--no-split", action="store_true", help=no_split)
    errors = "invalid UTF-8: stop naming the line, or replace it"
    p.add_argument("--errors", choices=["strict", "replace"], default="strict", help=errors)
    p.set_defaults(func=cmd_translate, overrides=[])

    p = sub.add_parser("inspect", help="draw the attention, gates and memory cells of a sentence")
    p.add_argument("model", help="run directory or checkpoint")
    p.add_argument("sentence", help="a source sentence, raw text")
    p.add_argument("-o", "--output", default="inspect.html", help=".html page or .png picture")
    _add_search(p, [SEARCH["beam"]])
    _add_device(p)
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
    samples = "resamples/trials (0: sacrebleu's)"
    p.add_argument("--samples", type=at_least(0), default=0, help=samples)
    p.add_argument("--format", choices=["text", "json", "markdown", "html"], default="text")
    p.add_argument("-o", "--output", help="write the report here")
    _add_device(p, default=None)  # None: not given, which only --model may be
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("serve", help="serve models over HTTP (LibreTranslate's and OpenNMT's APIs)")
    p.add_argument("model", nargs="+", help="run directories or checkpoints, a language pair each")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=at_least(1, most=65535), default=5000)
    _add_device(p)
    pending = "requests admitted at once; past it: 503"
    p.add_argument("--max-pending", type=at_least(1), default=256, help=pending)
    wait = "how long a request waits for others to share its batch"
    p.add_argument("--max-wait-ms", type=at_least(0, float), default=5.0, help=wait)
    lines = "lines in one batch at most (1: no batching)"
    p.add_argument("--max-batch-lines", type=at_least(1), default=256, help=lines)
    _add_glossary(p, "every request's (LibreTranslate's API too): ")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("plot", help="draw the learning curves of a run")
    p.add_argument("run", help="run directory (reads its metrics.jsonl)")
    p.add_argument("-o", "--output", help="PNG file (default: RUN/curves.png)")
    p.set_defaults(func=cmd_plot)
    return parser


def _add_search(p: argparse.ArgumentParser, options) -> None:
    """The search options (`nmt.options.SEARCH`), as text: `SearchOptions.parse` checks
    them, with the message the Python API and the server give."""
    for option in options:
        flag = "--" + option.name.replace("_", "-")
        p.add_argument(flag, metavar=option.kind.__name__.upper(), help=option.help)


def _add_glossary(p: argparse.ArgumentParser, whose: str = "") -> None:
    terms = "TSV: source term, TAB, target term (more TABs: choices); nmt/text/glossary.py"
    p.add_argument("--glossary", metavar="FILE", help=whose + terms)
    p.add_argument("--glossary-ignore-case", action="store_true", help="match terms case-folded")


def _add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--device and --precision, "auto" both: what `nmt.plan` picks for this machine."""
    p.add_argument("--device", default=default, help=DEVICE_HELP)
    p.add_argument("--precision", choices=PRECISIONS, default=default, help=PRECISION_HELP)


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
        if args.reset_optimizer and not args.resume:
            parser.error("--reset-optimizer applies only with --resume")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,  # main may run more than once in a process (the tests)
    )
    try:
        args.func(args)
    except NmtError as err:  # the project's own: bad input, said in one line
        print(f"nmt: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # the machine's: a file or device that fails under us
        print(f"nmt: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        sys.exit(2)

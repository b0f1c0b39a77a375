"""nmt: train LSTM translation models, translate files, score translations.

The parser and the one boundary where errors become messages: bad input (options,
config keys, data files, checkpoints, outputs) ends with a one-line error and exit
status 2; every option is checked as it is parsed. What each subcommand then does is
`nmt.commands`'.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import math
import os
import re
import signal
import sys
from pathlib import Path

import nmt
from nmt import interrupts
from nmt.commands import (
    cmd_average,
    cmd_evaluate,
    cmd_inspect,
    cmd_plot,
    cmd_serve,
    cmd_serve_keys,
    cmd_train,
    cmd_translate,
)
from nmt.errors import NmtError
from nmt.interrupts import Interrupted
from nmt.options import DEVICE_HELP, PRECISION_HELP, PRECISIONS, SEARCH
from nmt.text.formats import FORMATS

KEYS_DB = "db/api_keys.db"  # LibreTranslate's default place for its keys


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


def web_origin(text: str) -> str:
    """An argparse type: `*`, or an origin as a browser sends it (scheme://host[:port])."""
    if text == "*" or re.fullmatch(r"https?://[^/\s:]+(:\d{1,5})?", text):
        return text
    raise argparse.ArgumentTypeError(f"expected * or scheme://host[:port], got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nmt", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {nmt.__version__}")
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
    out = "output file (default: stdout); NAME.gz: compressed; written whole or not at all"
    p.add_argument("-o", "--output", default="-", help=out)
    _add_search(p, SEARCH.values())
    p.add_argument("--scores", action="store_true", help="append each line's score after a tab")
    p.add_argument("--alignments", action="store_true", help="append i-j alignments after a tab")
    _add_device(p)
    page = (
        "auto (default): from the input's suffix (text where it names none); text: one "
        "output line per input line; jsonl: the same, each input line "
        '{"text": ..., "constraints": [...], "avoid": [...], "prefix": ...}; the others: '
        "the input is one document, all but its text kept (docs/documents.md)"
    )
    p.add_argument("--format", choices=["auto", *FORMATS, "jsonl"], default="auto", help=page)
    kept = ".po, XLIFF: translate entries that already have a translation too"
    p.add_argument("--retranslate", action="store_true", help=kept)
    review = ".po: flag what is translated fuzzy; XLIFF: state needs-review-translation"
    p.add_argument("--review", action="store_true", help=review)
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
    kept = "checkpoint files, or run folders: their step-N.pt (kept with train.keep_last=N)"
    p.add_argument("checkpoints", nargs="+", help=kept)
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
    fmt = "the report's format (default: by -o's suffix, .json .md .html; else text)"
    p.add_argument("--format", choices=["text", "json", "markdown", "html"], help=fmt)
    p.add_argument("-o", "--output", help="write the report here (NAME.gz: compressed)")
    translations = (
        "with --model: write its translations here (default: REPORT.hyp beside -o REPORT, "
        "else SRC.hyp, or for the run's test split TEST.hyp.LANG beside the report; "
        "a default that exists is refused, never overwritten)"
    )
    p.add_argument("--translations", metavar="FILE", help=translations)
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
    lines = "lines in one batch at most, and so in each piece of a long request (1: no batching)"
    p.add_argument("--max-batch-lines", type=at_least(1), default=32, help=lines)
    chars = "characters in one text at most (LibreTranslate's char limit); past it: 400"
    p.add_argument("--char-limit", type=at_least(1), default=10_000, help=chars)
    texts = "texts in one request (and items in any JSON array) at most; past it: 400"
    p.add_argument("--batch-limit", type=at_least(1), default=10_000, help=texts)
    body = "bytes in a request's body at most; past it: 413"
    p.add_argument("--max-body-bytes", type=at_least(1), default=1 << 20, help=body)
    upload = "bytes in an upload to /translate_file (the form included) at most; past it: 413"
    p.add_argument("--max-file-bytes", type=at_least(1), default=10 << 20, help=upload)
    keep = "seconds a translated file can be downloaded from /download_file"
    p.add_argument("--file-keep-seconds", type=at_least(0, float), default=600.0, help=keep)
    timeout = "seconds for a request's body to arrive; past it: 408"
    p.add_argument("--body-timeout", type=at_least(0.1, float), default=30.0, help=timeout)
    grace = "seconds after SIGTERM to answer what was accepted; then what is stuck is closed"
    p.add_argument("--shutdown-grace", type=at_least(0, float), default=10.0, help=grace)
    origins = "web origins whose pages may call the server (CORS), or * for any"
    p.add_argument(
        "--cors-origins", nargs="+", type=web_origin, default=["*"], metavar="ORIGIN", help=origins
    )
    keys = "require API keys, kept in this SQLite file (see `nmt serve keys --help`)"
    p.add_argument("--api-keys", nargs="?", const=KEYS_DB, metavar="DB", help=keys)
    per_minute = "requests (texts) a minute per client address without a key; 0: no limit"
    p.add_argument("--req-limit", type=at_least(0), default=0, help=per_minute)
    _add_glossary(p, "every request's (LibreTranslate's API too): ")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("plot", help="draw the learning curves of a run")
    p.add_argument("run", help="run directory (reads its metrics.jsonl)")
    p.add_argument("-o", "--output", help="PNG file (default: RUN/curves.png)")
    p.set_defaults(func=cmd_plot)
    return parser


def build_keys_parser() -> argparse.ArgumentParser:
    """`nmt serve keys`: the API keys `nmt serve --api-keys DB` accepts."""
    parser = _Parser(prog="nmt serve keys", description=build_keys_parser.__doc__)
    parser.add_argument("--db", default=KEYS_DB, help="the SQLite file of keys")
    sub = parser.add_subparsers(required=True, metavar="ACTION", dest="action")
    p = sub.add_parser("add", help="add a key (or change one's limits); prints it")
    p.add_argument("req_limit", type=at_least(0), help="requests (texts) a minute; 0: no limit")
    p.add_argument("--key", help="the key itself (default: a new random one)")
    p.add_argument("--char-limit", type=at_least(1), help="characters per text for this key")
    sub.add_parser("list", help="the keys and their limits, one a line")
    p = sub.add_parser("remove", help="remove a key")
    p.add_argument("key")
    parser.set_defaults(func=cmd_serve_keys)
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
    """Runs one command; every way it can end is decided here: done (0), bad input or a
    failing file (2, one line), interrupted (130 for Ctrl-C, 143 for SIGTERM, one line),
    or a reader that closed its pipe (141, as for a program SIGPIPE ended; nothing said)."""
    from nmt.outputs import OutputClosed, remove_temporaries

    with interrupts.raising(restore=argv is not None):  # None: this process is nmt
        try:
            try:
                _run(argv)
            finally:
                remove_temporaries()  # a signal at an unlucky moment may have left one
            _flush_stdout()  # inside: a full disk or a closed pipe is reported here
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: `Interrupted`, as a rule
            stop = stop if isinstance(stop, Interrupted) else Interrupted()
            _say(f"nmt: {stop}")
            sys.exit(stop.status)
        except OutputClosed:
            _detach_stdout()
            sys.exit(128 + signal.SIGPIPE)
        except NmtError as err:  # the project's own: bad input, said in one line
            _say(f"nmt: error: {err}")
            sys.exit(2)
        except OSError as err:  # the machine's: a file or device that fails under us
            where = f"{err.filename}: " if err.filename else ""
            _say(f"nmt: error: {where}{err.strerror or err}")
            sys.exit(2)
        except SystemExit:  # argparse's --help and errors: what they printed must get out
            _flush_stdout_quietly()
            raise


def _run(argv: list[str] | None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet = [a for a in itertools.takewhile(lambda a: a in ("-q", "--quiet"), argv)]
    if argv[len(quiet) : len(quiet) + 2] == ["serve", "keys"]:  # a run named keys: ./keys
        args = build_keys_parser().parse_args(argv[len(quiet) + 2 :])
        args.quiet = bool(quiet)
    else:
        args = _parse(build_parser(), argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,  # main may run more than once in a process (the tests)
    )
    args.func(args)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
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
    return args


def _say(line: str) -> None:
    """The one line a command ends with, on stderr (if there is one)."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError):
            print(line, file=sys.stderr, flush=True)


def _flush_stdout() -> None:
    """What is still buffered for stdout, written now, its failure named `<stdout>`."""
    from nmt.outputs import output_file

    if sys.stdout is not None:
        with output_file("-"):
            pass


def _flush_stdout_quietly() -> None:
    from nmt.outputs import OutputClosed

    with contextlib.suppress(OutputClosed, NmtError):
        _flush_stdout()


def _detach_stdout() -> None:
    """Points stdout at /dev/null: Python flushes it once more at exit, and a closed
    pipe would print a warning then."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

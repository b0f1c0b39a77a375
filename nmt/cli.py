"""nmt: train LSTM translation models, translate files, score translations.

Each subcommand hands off to one library function. Bad input (config keys,
data files, checkpoints) ends with a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("nmt")


def cmd_train(args: argparse.Namespace) -> None:
    from nmt.config import Config
    from nmt.train import train

    out = Path(args.out)
    if args.resume:
        cfg = None  # the run's own config, with the overrides applied on top
    else:
        cfg = Config.from_yaml(args.config, args.overrides)
    train(
        cfg,
        out,
        resume=args.resume,
        overrides=args.overrides if args.resume else [],
        reset_optimizer=args.reset_optimizer,
        device=args.device,
    )


def cmd_translate(args: argparse.Namespace) -> None:
    from nmt.data import read_lines
    from nmt.translate import Translator

    translator = Translator.load(args.model, device=args.device)
    lines = (
        sys.stdin.read().splitlines()
        if args.input == "-"
        else read_lines(Path(args.input), args.errors)
    )
    hyps = translator.translate(lines, beam=args.beam, alpha=args.alpha, max_tokens=args.max_tokens)
    text = "".join(f"{h.text}\n" for h in hyps)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from nmt.data import DataError, read_lines
    from nmt.metrics import bleu, chrf

    hyps, refs = read_lines(Path(args.hyp)), read_lines(Path(args.ref))
    if len(hyps) != len(refs):
        raise DataError(f"{args.hyp} has {len(hyps)} lines but {args.ref} has {len(refs)}")
    score, signature = bleu(hyps, refs)
    chrf_score, chrf_signature = chrf(hyps, refs)
    report = {
        "bleu": round(score, 2),
        "chrf": round(chrf_score, 2),
        "signature": signature,
        "chrf_signature": chrf_signature,
    }
    print(f"BLEU = {score:.2f}  chrF2 = {chrf_score:.2f}\n{signature}\n{chrf_signature}")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


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

    p = sub.add_parser("translate", help="translate text with a trained model")
    p.add_argument("model", help="run directory or checkpoint file")
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--beam", type=int, help="beam size (1: greedy; default: from the config)")
    p.add_argument("--alpha", type=float, help="length penalty exponent")
    p.add_argument("--max-tokens", type=int, help="source tokens per batch")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--errors",
        choices=["strict", "replace"],
        default="strict",
        help="invalid UTF-8 input: stop with an error, or replace it",
    )
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("evaluate", help="score a translation with SacreBLEU")
    p.add_argument("--hyp", required=True, help="hypothesis file, one line per segment")
    p.add_argument("--ref", required=True, help="reference file")
    p.add_argument("-o", "--output", help="also write the scores as JSON here")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    # overrides may come after options too: `nmt train CFG --out R train.lr=3e-4`
    args, extra = parser.parse_known_args(argv)
    if args.func is cmd_train:
        unknown = [item for item in extra if item.startswith("-") or "=" not in item]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides += extra
        if args.config and "=" in args.config:  # `--resume train.max_steps=9`: no config given
            args.overrides.insert(0, args.config)
            args.config = None
        if args.config is None and not args.resume:
            parser.error("train needs a CONFIG file (or --resume)")
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from nmt.checkpoint import CheckpointError
    from nmt.config import ConfigError
    from nmt.data import DataError
    from nmt.train import RunError

    try:
        args.func(args)
    except (ConfigError, DataError, CheckpointError, RunError) as err:
        print(f"nmt: error: {err}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as err:
        print(f"nmt: error: {err.filename or err}: no such file", file=sys.stderr)
        sys.exit(2)

"""Command line: ``python -m brain_mri evaluate|predict|card``; clear errors instead of tracebacks."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def run_cli_errors(fn) -> int:
    """Runs ``fn``; known user errors become one line on stderr and exit status 2."""
    from .data import DataError
    from .hub import HubError
    from .model import PretrainedUnavailable

    try:
        fn()
    except (DataError, HubError, PretrainedUnavailable, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m brain_mri", description="brain-mri command line")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("evaluate", help="test metrics (full and leak-free) of a model folder or Hub id")
    e.add_argument("--model", required=True, help="model folder or Hub repo id")
    e.add_argument("--data", required=True, help="dataset folder (Kaggle layout) or Hub dataset id")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--output", help="write the metrics as JSON here")
    e.add_argument("--csv", help="write per-image predictions as CSV here")
    pr = sub.add_parser("predict", help="class probabilities of image files")
    pr.add_argument("--model", required=True, help="model folder or Hub repo id")
    pr.add_argument("images", nargs="+", help="image files")
    c = sub.add_parser("card", help="render a model folder's card again, optionally with notes")
    c.add_argument("--model", required=True, help="model folder written by train.py")
    c.add_argument("--notes", help="markdown file for the 'Model selection and explanations' section")
    return p


def evaluate_cmd(args):
    from .evaluate import evaluate_model, format_table

    print(format_table(evaluate_model(args.model, args.data, args.batch_size, args.output, args.csv)))


def predict_cmd(args):
    from .inference import BrainMRIClassifier

    clf = BrainMRIClassifier.from_pretrained(args.model)
    for path in args.images:
        print(json.dumps({"file": path, **clf.predict(path)}))


def card_cmd(args):
    from .card import rerender_card

    rerender_card(Path(args.model), Path(args.notes).read_text() if args.notes else None)
    print(f"wrote {Path(args.model) / 'README.md'}")


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    commands = {"evaluate": evaluate_cmd, "predict": predict_cmd, "card": card_cmd}
    return run_cli_errors(lambda: commands[args.command](args))

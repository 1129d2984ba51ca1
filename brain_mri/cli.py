"""Command line: ``python -m brain_mri evaluate|predict``; clear errors instead of tracebacks."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("brain_mri")


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


def evaluate(model: str, data: str, batch_size: int = 64, output: str | None = None, csv: str | None = None) -> dict:
    """Evaluates a model folder or Hub id on the test split, full and leak-free.

    Returns the metrics dict (the probabilities are the model's own: a temperature folded
    into an exported head applies already).
    """
    from accelerate import Accelerator

    from .data import Normalize, prepare_data
    from .engine import make_loader, predict_logits, write_predictions
    from .inference import BrainMRIClassifier
    from .metrics import evaluate_logits, softmax

    clf = BrainMRIClassifier.from_pretrained(model)
    bundle = prepare_data(data, clf.data_config, with_val=False, drop_leaks=False)
    accelerator = Accelerator()
    loader = accelerator.prepare(make_loader(bundle.test, batch_size, False, 0))
    normalize = Normalize(clf.data_config["mean"], clf.data_config["std"]).to(accelerator.device)
    logits, labels = predict_logits(accelerator, clf.model.to(accelerator.device), loader, normalize)
    result = {k: v["uncalibrated"] for k, v in evaluate_logits(logits, labels, 1.0, bundle.test_leak_free).items()}
    result["duplicates"] = bundle.report.as_dict()
    if output:
        Path(output).write_text(json.dumps(result, indent=1))
    if csv:
        write_predictions(Path(csv), bundle.test.names, labels, softmax(logits), bundle.test_leak_free)
    return result


def format_table(result: dict) -> str:
    rows = ["| split | n | accuracy (95% CI) | macro-F1 | glioma recall | ECE | NLL |", "|---|---:|---|---:|---:|---:|---:|"]
    for k in ("full", "leak_free"):
        if k in result:
            m = result[k]
            lo, hi = m["accuracy_ci95"]
            rows.append(f"| {k.replace('_', '-')} | {m['n']} | {m['accuracy']:.4f} ({lo:.4f}-{hi:.4f}) | "
                        f"{m['macro_f1']:.4f} | {m['per_class']['glioma']['recall']:.4f} | {m['ece']:.4f} | {m['nll']:.4f} |")
    return "\n".join(rows)


def main(argv=None):
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
    args = p.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)

    def evaluate_cmd():
        print(format_table(evaluate(args.model, args.data, args.batch_size, args.output, args.csv)))

    def predict_cmd():
        from .inference import BrainMRIClassifier

        clf = BrainMRIClassifier.from_pretrained(args.model)
        for path in args.images:
            print(json.dumps({"file": path, **clf.predict(path)}))

    def card_cmd():
        from .engine import rerender_card

        rerender_card(Path(args.model), Path(args.notes).read_text() if args.notes else None)
        print(f"wrote {Path(args.model) / 'README.md'}")

    commands = {"evaluate": evaluate_cmd, "predict": predict_cmd, "card": card_cmd}
    return run_cli_errors(commands[args.command])

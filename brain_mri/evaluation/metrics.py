"""Classification and calibration metrics (scikit-learn), temperature scaling, figures."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..config import CLASS_NAMES, ECE_BINS


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of the top-class confidence over ``n_bins`` equal-width bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (bounded to [0.05, 20])."""
    from scipy.optimize import minimize_scalar
    from sklearn.metrics import log_loss

    res = minimize_scalar(
        lambda log_t: log_loss(labels, softmax(logits, math.exp(log_t)), labels=range(len(CLASS_NAMES))),
        bounds=(math.log(0.05), math.log(20.0)), method="bounded",
    )
    return float(math.exp(res.x))


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy (with Wilson CI), per-class and macro P/R/F1, confusion matrix, ROC-AUC,
    ECE, NLL and a confidence analysis."""
    from sklearn.metrics import (
        accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support, roc_auc_score,
    )

    labels = np.asarray(labels)
    k = len(CLASS_NAMES)
    pred = probs.argmax(axis=1)
    n = len(labels)
    n_correct = int((pred == labels).sum())
    p, r, f, support = precision_recall_fscore_support(labels, pred, labels=range(k), zero_division=0)
    present = [c for c in range(k) if (labels == c).any()]
    try:
        auc = {CLASS_NAMES[c]: float(roc_auc_score(labels == c, probs[:, c])) for c in present
               if (labels != c).any()}
    except ValueError:
        auc = {}
    conf = probs.max(axis=1)
    right = pred == labels
    confident = conf >= 0.9
    return {
        "n": n,
        "accuracy": float(accuracy_score(labels, pred)),
        "accuracy_ci95": list(wilson_interval(n_correct, n)),
        "errors": n - n_correct,
        "macro_precision": float(p[present].mean()) if present else float("nan"),
        "macro_recall": float(r[present].mean()) if present else float("nan"),
        "macro_f1": float(f[present].mean()) if present else float("nan"),
        "per_class": {
            CLASS_NAMES[c]: {"precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                             "support": int(support[c]), "roc_auc": auc.get(CLASS_NAMES[c])}
            for c in range(k)
        },
        "macro_roc_auc": float(np.mean(list(auc.values()))) if auc else None,
        "confusion_matrix": confusion_matrix(labels, pred, labels=range(k)).tolist(),
        "ece": expected_calibration_error(probs, labels),
        "nll": float(log_loss(labels, np.clip(probs, 1e-12, 1), labels=range(k))),
        "mean_confidence_correct": float(conf[right].mean()) if right.any() else None,
        "mean_confidence_wrong": float(conf[~right].mean()) if (~right).any() else None,
        "share_confident": float(confident.mean()),
        "accuracy_confident": float(right[confident].mean()) if confident.any() else None,
    }


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, temperature: float, leak_free: np.ndarray) -> dict:
    """Metrics before and after temperature scaling, on the full and leak-free split."""
    out = {}
    for subset, mask in (("full", np.ones(len(labels), bool)), ("leak_free", leak_free)):
        if not mask.any():
            continue
        out[subset] = {
            "uncalibrated": classification_metrics(labels[mask], softmax(logits[mask])),
            "calibrated": classification_metrics(labels[mask], softmax(logits[mask], temperature)),
        }
    return out


# ----------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(labels, probs, path: Path, title: str):
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ConfusionMatrixDisplay.from_predictions(
        labels, probs.argmax(1), labels=range(len(CLASS_NAMES)), display_labels=CLASS_NAMES,
        ax=ax, colorbar=False, cmap="Blues",
    )
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(labels, probs, path: Path, title: str):
    from sklearn.metrics import RocCurveDisplay

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for c, name in enumerate(CLASS_NAMES):
        if (labels == c).any() and (labels != c).any():
            RocCurveDisplay.from_predictions(labels == c, probs[:, c], name=name, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(labels, probs_before, probs_after, path: Path, title: str, n_bins: int = ECE_BINS):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    edges = np.linspace(0, 1, n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for probs, name, style in ((probs_before, "before T", "o--"), (probs_after, "after T", "s-")):
        conf, correct = probs.max(1), probs.argmax(1) == labels
        bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
        acc = [correct[bins == b].mean() if (bins == b).any() else np.nan for b in range(n_bins)]
        ax.plot(centres, acc, style, label=f"{name} (ECE {expected_calibration_error(probs, labels):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(history: list[dict], path: Path):
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    ep = [h["epoch"] for h in history]
    a1.plot(ep, [h["train_loss"] for h in history], label="train loss")
    a1.plot(ep, [h["val_loss"] for h in history], label="val loss")
    a1.set_xlabel("epoch")
    a1.legend()
    a2.plot(ep, [h["train_acc"] for h in history], label="train acc")
    a2.plot(ep, [h["val_acc"] for h in history], label="val acc")
    a2.plot(ep, [h["val_macro_f1"] for h in history], label="val macro-F1")
    a2.set_xlabel("epoch")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(out_dir: Path, labels, logits, temperature, leak_free, history=None) -> list[str]:
    """Writes the evaluation figures; returns their file names relative to ``out_dir``."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    probs = softmax(logits, temperature)
    written = []
    for subset, mask in (("full", np.ones(len(labels), bool)), ("leak_free", leak_free)):
        if not mask.any():
            continue
        tag = "full test" if subset == "full" else "leak-free test"
        plot_confusion(labels[mask], probs[mask], fig_dir / f"confusion_{subset}.png", f"Confusion matrix, {tag}")
        plot_roc(labels[mask], probs[mask], fig_dir / f"roc_{subset}.png", f"ROC, {tag}")
        plot_reliability(labels[mask], softmax(logits[mask]), probs[mask],
                         fig_dir / f"reliability_{subset}.png", f"Reliability, {tag}")
        written += [f"figures/{k}_{subset}.png" for k in ("confusion", "roc", "reliability")]
    if history:
        plot_training_curves(history, fig_dir / "training_curves.png")
        written.append("figures/training_curves.png")
    return written

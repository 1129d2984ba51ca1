"""Batch prediction over files and folders: one row per readable image, the unreadable ones listed.

Used by ``brain-mri predict`` and ``brain-mri gallery``; serving code, so no training import.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import CLASS_NAMES, DICOM_EXTENSIONS, IMAGE_EXTENSIONS, true_class


@dataclass
class Prediction:
    """One image's answer; ``label`` is the true class when the folder layout names it."""

    file: str
    predicted: str
    probabilities: dict  # class id -> probability
    warning: str | None = None  # why the image is not taken for a brain MRI slice: then no answer
    label: str | None = None
    ood_score: float | None = None  # distance to the training features (brain_mri.ood)

    @property
    def flagged(self) -> bool:
        """Not taken for a brain MRI slice: ``predicted`` is no answer."""
        return self.warning is not None


def find_images(paths) -> list[Path]:
    """The files named, and every image or DICOM file under the folders named (recursive, sorted).

    A named file is kept whatever its extension (and even if missing): reading it decides.
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(f for f in path.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS + DICOM_EXTENSIONS)
        else:
            found.append(path)
    return found


def predict_files(clf, files, batch_size: int = 16, progress: bool = True):
    """Predicts every readable file, ``batch_size`` at a time.

    Returns:
        ``(predictions, skipped)``: a :class:`Prediction` per readable image, in order, and
        ``(file, reason)`` for each file that could not be read as an image.
    """
    from tqdm.auto import tqdm

    from .images import to_pil_rgb

    predictions, skipped, pending = [], [], []
    bar = tqdm(total=len(files), desc="predict", unit="image", disable=not progress)
    for i, path in enumerate(files):
        try:
            pending.append((path, to_pil_rgb(path)))
        except (OSError, ValueError) as e:
            skipped.append((str(path), str(e) or type(e).__name__))
        if pending and (len(pending) == batch_size or i == len(files) - 1):
            for (p, _), a in zip(pending, clf.assess([rgb for _, rgb in pending])):
                scores = a["probabilities"]
                predictions.append(Prediction(str(p), max(scores, key=scores.get), scores, a["warning"],
                                              true_class(p), a["ood_score"]))
            pending = []
        bar.update(1)
    bar.close()
    return predictions, skipped


def write_csv(predictions, path) -> None:
    """One row per image: file, true class (if known), predicted class (empty when flagged), the four
    probabilities, flagged (1 = not taken for a brain MRI slice), its distance to the training features, warning."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "predicted", *[f"p_{c}" for c in CLASS_NAMES], "flagged", "ood_score", "warning"])
        for p in predictions:
            w.writerow([p.file, p.label or "", "" if p.flagged else p.predicted,
                        *[f"{p.probabilities[c]:.6f}" for c in CLASS_NAMES], int(p.flagged),
                        "" if p.ood_score is None else f"{p.ood_score:.2f}", p.warning or ""])


def write_json(predictions, skipped, path) -> None:
    """``{"predictions": [...], "skipped": [{"file", "reason"}]}``."""
    Path(path).write_text(json.dumps({
        "predictions": [{**asdict(p), "flagged": p.flagged} for p in predictions],
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
    }, indent=1))

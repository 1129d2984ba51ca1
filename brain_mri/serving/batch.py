"""Batch prediction over files and folders: one row per readable image, the unreadable ones listed.

Used by ``brain-mri predict`` and ``brain-mri gallery``; serving code, so no training import.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import CLASS_NAMES, DICOM_EXTENSIONS, IMAGE_EXTENSIONS, true_class
from ..io.volumes import VOLUME_SUFFIXES, is_volume, read_volume


@dataclass
class Prediction:
    """One image's answer; ``label`` is the true class when the folder layout names it."""

    file: str
    predicted: str
    probabilities: dict  # class id -> probability
    warning: str | None = None  # why the image is not taken for a brain MRI slice: then no answer
    label: str | None = None
    ood_score: float | None = None  # distance to the training features (brain_mri.serving.ood)
    plane: str | None = None  # for a slice of a whole scan: its plane and index
    slice: int | None = None
    head_section: float | None = None  # and its head section, a share of the scan's largest (near 0: an end)

    @property
    def flagged(self) -> bool:
        """Not taken for a brain MRI slice: ``predicted`` is no answer."""
        return self.warning is not None


def find_images(paths, series=()) -> list[Path]:
    """The files named, and every image, DICOM or scan file (NIfTI, zip) under the folders named (recursive,
    sorted); each folder in ``series`` is kept as it is, to be read as one DICOM series.

    A named file is kept whatever its extension (and even if missing): reading it decides.
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(f for f in path.rglob("*") if f.is_file() and (
                f.suffix.lower() in IMAGE_EXTENSIONS + DICOM_EXTENSIONS or f.name.lower().endswith(VOLUME_SUFFIXES)))
        else:
            found.append(path)
    return found + [Path(folder) for folder in series]


def predict_files(clf, files, batch_size: int = 16, progress: bool = True, plane: str = "axial"):
    """Predicts every readable file, ``batch_size`` at a time; a whole scan gives one row per slice.

    Returns:
        ``(predictions, skipped)``: a :class:`Prediction` per readable image or slice, in order, and
        ``(file, reason)`` for each file that could not be read.
    """
    from tqdm.auto import tqdm

    from ..io.images import to_pil_rgb

    files = [Path(f) for f in files]
    scans = [is_volume(f) for f in files]
    predictions, skipped, pending = [], [], []
    bar = tqdm(total=len(files), desc="predict", unit="file", disable=not progress)
    for i, path in enumerate(files):
        try:
            if scans[i]:
                predictions += _scan_rows(clf, path, plane, progress)
            else:
                pending.append((path, to_pil_rgb(path)))
        except (OSError, ValueError) as e:
            skipped.append((str(path), str(e) or type(e).__name__))
        if pending and (len(pending) == batch_size or i == len(files) - 1 or scans[i + 1]):
            for (p, _), a in zip(pending, clf.assess([rgb for _, rgb in pending])):
                predictions.append(_row(p, a, true_class(p)))
            pending = []
        bar.update(1)
    bar.close()
    return predictions, skipped


def _row(path, assessed: dict, label=None, **where) -> Prediction:
    scores = assessed["probabilities"]
    return Prediction(str(path), max(scores, key=scores.get), scores, assessed["warning"], label,
                      assessed["ood_score"], **where)


def _scan_rows(clf, path: Path, plane: str, progress: bool) -> list[Prediction]:
    """One row per slice of a scan, with a progress bar over its slices."""
    from tqdm.auto import tqdm

    volume = read_volume(path)
    with tqdm(total=volume.count(plane), desc=volume.name, unit="slice", leave=False, disable=not progress) as bar:
        a = clf.assess_volume(volume, plane, top=0, progress=lambda done, _: bar.update(done - bar.n))
    return [_row(path, s, plane=plane, slice=k, head_section=a.head_section(k)) for k, s in enumerate(a.slices)]


def write_csv(predictions, path) -> None:
    """One row per image or slice: file, plane, slice index and head section (scans), true class (if known),
    predicted class (empty when flagged), the four probabilities, flagged (1 = not taken for a brain MRI slice),
    its distance to the training features, warning."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "plane", "slice", "head_section", "label", "predicted", *[f"p_{c}" for c in CLASS_NAMES],
                    "flagged", "ood_score", "warning"])
        for p in predictions:
            w.writerow([p.file, p.plane or "", "" if p.slice is None else p.slice,
                        "" if p.head_section is None else f"{p.head_section:.4f}", p.label or "",
                        "" if p.flagged else p.predicted,
                        *[f"{p.probabilities[c]:.6f}" for c in CLASS_NAMES], int(p.flagged),
                        "" if p.ood_score is None else f"{p.ood_score:.2f}", p.warning or ""])


def write_json(predictions, skipped, path) -> None:
    """``{"predictions": [...], "skipped": [{"file", "reason"}]}``."""
    Path(path).write_text(json.dumps({
        "predictions": [{**asdict(p), "flagged": p.flagged} for p in predictions],
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
    }, indent=1))

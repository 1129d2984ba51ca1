"""Does a heatmap point at the tumour? Tumour boxes, the pointing game, CAM energy in the box and the head.

Heatmaps and boxes meet in the image's own pixels (224 px for the Kaggle copy); the boxes come
from ``tumour_boxes.csv`` beside the dataset (figshare annotations, see the dataset README).
Testing boxes are for measurement only: choose with the validation split's boxes.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

BOX_FILE = "tumour_boxes.csv"
#: Pointing game: the heatmap's peak may lie this many pixels (224-px image) outside the box.
POINTING_TOLERANCE = 15.0


def load_boxes(data_root) -> dict:
    """``{"Testing/glioma/x.jpg": (x0, y0, x1, y1, width, height)}`` from ``tumour_boxes.csv`` beside the
    data, or ``{}`` (no file, or a Hub dataset id)."""
    path = Path(str(data_root)) / BOX_FILE
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["file"]: tuple(float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max", "width", "height"))
                for r in csv.DictReader(f)}


def box_in_view(box, region, size: int) -> tuple[float, float, float, float]:
    """A box (of :func:`load_boxes`) in the pixels of a model's S x S view of ``region`` of its image."""
    x0, y0, x1, y1, _, _ = box  # the region is in the image's own pixels, as is the box
    rx0, ry0, rx1, ry1 = region
    sx, sy = size / (rx1 - rx0), size / (ry1 - ry0)
    return (x0 - rx0) * sx, (y0 - ry0) * sy, (x1 - rx0) * sx, (y1 - ry0) * sy


def _box_in(heatmap: np.ndarray, box) -> tuple[float, float, float, float]:
    """The box in the heatmap's pixels (the box's own image may have another size)."""
    x0, y0, x1, y1, w, h = box
    sx, sy = heatmap.shape[1] / w, heatmap.shape[0] / h
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy


def pointing_hit(heatmap: np.ndarray, box, tolerance: float = POINTING_TOLERANCE) -> bool:
    """True when the heatmap's peak lies within ``tolerance`` px (of the box's image) of the box."""
    x0, y0, x1, y1 = _box_in(heatmap, box)
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    px, py = x + 0.5, y + 0.5  # pixel centre
    dx, dy = max(x0 - px, 0.0, px - x1), max(y0 - py, 0.0, py - y1)
    return bool(np.hypot(dx, dy) * box[4] / heatmap.shape[1] <= tolerance)


def box_energy_ratio(heatmap: np.ndarray, box) -> float:
    """Share of the heatmap's energy inside the box, divided by the box's share of the image
    (1 = no better than a flat map; NaN for an empty map)."""
    x0, y0, x1, y1 = _box_in(heatmap, box)
    ys, xs = np.mgrid[:heatmap.shape[0], :heatmap.shape[1]] + 0.5
    inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    total = float(heatmap.sum())
    if total <= 0 or not inside.any():
        return float("nan")
    return float(heatmap[inside].sum() / total / inside.mean())


def head_mask(image: np.ndarray, threshold: int = 20) -> np.ndarray:
    """Boolean H x W mask of the head: pixels brighter than ``threshold``, closed and hole-filled
    (dark ventricles and CSF inside the skull count as head)."""
    from scipy import ndimage

    mask = image.max(axis=-1) > threshold
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask)


def head_energy_share(heatmap: np.ndarray, image: np.ndarray, threshold: int = 20) -> float:
    """Share of the CAM's energy (sum of the map) that falls inside :func:`head_mask`."""
    total = float(heatmap.sum())
    return float(heatmap[head_mask(image, threshold)].sum() / total) if total > 0 else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Per class and overall: images, pointing game, mean box energy ratio, mean head share.

    Args:
        rows: one per image: ``label``, and ``hit`` / ``box_ratio`` (boxed images) or
            ``head_share`` (any image).
    """
    out = {}
    for name in sorted({r["label"] for r in rows}) + ["all boxed"]:
        sel = [r for r in rows if (r["label"] == name if name != "all boxed" else "hit" in r)]
        boxed = [r for r in sel if "hit" in r]
        heads = [r for r in sel if "head_share" in r and not np.isnan(r["head_share"])]
        if not sel:
            continue
        out[name] = {
            "images": len(sel), "boxed": len(boxed),
            "pointing": float(np.mean([r["hit"] for r in boxed])) if boxed else None,
            "box_ratio": float(np.nanmean([r["box_ratio"] for r in boxed])) if boxed else None,
            "head_share": float(np.mean([r["head_share"] for r in heads])) if heads else None,
            "head_area": float(np.mean([r["head_area"] for r in heads])) if heads and "head_area" in heads[0] else None,
        }
    return out

"""Slices known only to hold a tumour (``--tumour-present DIR``, e.g. Br35H's "yes" half): loading, a held-out
part with near-twins kept together, batches beside the Kaggle ones, and the partial-label loss.

Every Kaggle "no tumour" slice comes from Br35H; with Br35H's tumour slices in training, "looks like Br35H" stops
meaning "no tumour". Their label says only that one of the three tumour classes is right, so their loss is minus
the log of the summed probabilities of those classes. Training code: serving never imports it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..config import CLASS_NAMES, IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)
TUMOUR = [i for i, c in enumerate(CLASS_NAMES) if c != "notumor"]


def load_tumour_present(folder: str, data_config: dict, held_out: float, seed: int, progress: bool = True):
    """``(train, held_out)`` :class:`~brain_mri.training.data.DecodedSplit` of the images under ``folder``, loaded through
    ``datasets`` like the Kaggle set; near-twins (re-crops, re-windows) fall on one side.

    Raises:
        DataError: no such folder, or no readable image in it.
    """
    import datasets
    from sklearn.model_selection import GroupShuffleSplit

    from .data import DataError, decode_split
    from .dedup import duplicate_groups

    root = Path(folder).expanduser()
    files = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) \
        if root.is_dir() else []
    if not files:
        raise DataError(f"--tumour-present {folder}: no such folder, or no image in it.")
    rows = datasets.load_dataset("imagefolder", data_files={"train": files})["train"]
    rows = rows.cast_column("image", datasets.Image(decode=False))
    rows = rows.select_columns(["image"]).add_column("label", [-1] * len(rows))  # no class: a tumour
    split, skipped = decode_split(rows, data_config, "tumour-present", progress)
    _, near = duplicate_groups(split.md5, split.thumbs)
    keep, out = next(GroupShuffleSplit(1, test_size=held_out, random_state=seed).split(split.labels, groups=near))
    return split.subset(np.sort(keep)), split.subset(np.sort(out)), skipped


def add_tumour_present(bundle, folder: str, data_config: dict, held_out: float, seed: int, progress: bool = True):
    """Loads :func:`load_tumour_present` into a :class:`~brain_mri.training.data.DataBundle` (its skipped files too)."""
    bundle.tumour_train, bundle.tumour_held_out, skipped = load_tumour_present(folder, data_config, held_out, seed,
                                                                               progress)
    bundle.skipped += skipped
    logger.info("tumour-present slices: train %d, held out %d", len(bundle.tumour_train), len(bundle.tumour_held_out))


def tumour_present_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean of minus the log of the summed probability of the tumour classes."""
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, TUMOUR], 1)).mean()


class TumourBatches:
    """An endless stream of ``size`` training slices per step, shuffled anew each epoch (seeded by the run's
    seed, the epoch and the process, so a resumed epoch draws as the uninterrupted one did)."""

    def __init__(self, split, size: int, weight: float, seed: int, transform=None):
        from .data import ArrayDataset

        self.data, self.size, self.weight, self.seed = ArrayDataset(split, transform), size, weight, seed

    def epoch(self, epoch: int, process: int = 0):
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch * 10 + process + 7)
        size = min(self.size, len(self.data))
        while True:
            order = torch.randperm(len(self.data), generator=g)
            for start in range(0, len(order) - size + 1, size):
                yield torch.stack([self.data[int(i)][0] for i in order[start:start + size]])


def called_tumour(logits: np.ndarray) -> float:
    """Share of slices whose top class is a tumour class."""
    return float(np.isin(np.asarray(logits).argmax(1), TUMOUR).mean()) if len(logits) else float("nan")

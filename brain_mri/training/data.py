"""The dataset: Kaggle layout or Hub dataset (through ``datasets``), decoding, the split, loaders.

The dataset is decoded once per run: every image becomes a uint8 array at the model's input
size (timm's eval resize / crop), held in memory; training then augments whole batches as
tensors (:mod:`brain_mri.transforms`).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import CLASS_NAMES, IMAGE_EXTENSIONS, KAGGLE_SPLITS, TrainConfig
from .dedup import DedupReport, audit_split, duplicate_groups, thumbnail
from ..hub import hub_unreachable_reason, is_hub_id
from ..io.images import to_pil_rgb
from ..transforms import EvalView

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """The dataset cannot be used as given; the message says why."""


# ----------------------------------------------------------------------------- loading
def check_kaggle_layout(root: Path) -> None:
    """Checks ``root`` holds ``Training/`` and ``Testing/`` with exactly the four class folders.

    Raises:
        DataError: a split or class folder is missing or unknown.
    """
    for folder in KAGGLE_SPLITS:
        split_dir = root / folder
        if not split_dir.is_dir():
            raise DataError(
                f"{root} is not in the Kaggle layout: missing folder {folder}/ "
                f"(expected {', '.join(f + '/' for f in KAGGLE_SPLITS)} each holding "
                f"{', '.join(CLASS_NAMES)})."
            )
        found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        missing = [c for c in CLASS_NAMES if c not in found]
        unknown = [c for c in found if c not in CLASS_NAMES]
        if missing or unknown:
            parts = [f"missing {', '.join(missing)}"] if missing else []
            parts += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise DataError(
                f"{split_dir}: class folders do not match ({'; '.join(parts)}). "
                f"Expected exactly: {', '.join(CLASS_NAMES)}."
            )


def _load_kaggle_folder(root: Path):
    import datasets

    check_kaggle_layout(root)
    # imagefolder merges Training/ and Testing/ into one split: name the files per split.
    data_files = {}
    for folder, split in KAGGLE_SPLITS.items():
        files = sorted(
            str(p) for c in CLASS_NAMES for p in (root / folder / c).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(f"The {split} split ({root / folder}) holds no images.")
        data_files[split] = files
    return datasets.load_dataset("imagefolder", data_files=data_files)


def _load_hub_dataset(source: str):
    import datasets

    reason = hub_unreachable_reason()
    if reason:
        raise DataError(
            f"Cannot load the Hub dataset {source!r}: {reason}. Pass a local folder in the "
            "Kaggle layout instead (Training/<class>/, Testing/<class>/)."
        )
    try:
        return datasets.load_dataset(source)
    except Exception as e:  # datasets raises many types; the user needs the message
        raise DataError(f"Cannot load the Hub dataset {source!r}: {e}") from e


def load_raw_splits(source: str):
    """Loads the ``train`` and ``test`` splits through ``datasets``, images left undecoded.

    Args:
        source: a local folder in the Kaggle layout or a Hub dataset id with ``train`` and
            ``test`` splits, an image column and a class-label column.

    Returns:
        A ``datasets.DatasetDict`` with columns ``image`` ({bytes, path}) and ``label``,
        labels in :data:`CLASS_NAMES` order.
    """
    import datasets

    root = Path(source).expanduser()
    if root.is_dir():
        ds = _load_kaggle_folder(root)
    elif is_hub_id(source):
        ds = _load_hub_dataset(source)
    else:
        raise DataError(f"No such data folder: {source}")
    for split in ("train", "test"):
        if split not in ds:
            raise DataError(f"{source} has no {split!r} split (found: {', '.join(ds)}).")
    return datasets.DatasetDict({s: standardise(ds[s], source) for s in ("train", "test")})


def standardise(split, source: str):
    """One split with an ``image`` column (undecoded) and a ``label`` column in :data:`CLASS_NAMES` order.

    Raises:
        DataError: no image or class-label column, unknown classes, or no rows.
    """
    import datasets

    image_col = next((c for c, f in split.features.items() if isinstance(f, datasets.Image)), None)
    label_col = next((c for c, f in split.features.items() if isinstance(f, datasets.ClassLabel)), None)
    if image_col is None or label_col is None:
        raise DataError(f"{source} needs an image column and a class-label column; found {list(split.features)}.")
    names = split.features[label_col].names
    unknown = [n for n in names if n not in CLASS_NAMES]
    if unknown:
        raise DataError(f"{source}: unknown classes {unknown}. Expected: {', '.join(CLASS_NAMES)}.")
    if len(split) == 0:
        raise DataError(f"{source}: a split is empty.")
    split = split.select_columns([image_col, label_col]).rename_columns({image_col: "image", label_col: "label"})
    split = split.cast_column("image", datasets.Image(decode=False))
    if list(names) != list(CLASS_NAMES):
        split = split.align_labels_with_mapping({c: i for i, c in enumerate(CLASS_NAMES)}, "label")
    return split


# ----------------------------------------------------------------------------- decoding
@dataclass
class DecodedSplit:
    """One split decoded once: model-size uint8 arrays, labels, file ids, hashes, thumbnails, and
    where each view lies in its image."""

    images: np.ndarray  # N x 3 x S x S, uint8
    labels: np.ndarray  # N, int64
    names: list  # file name relative to the split folder, or a row id
    md5: list
    thumbs: np.ndarray  # N x THUMB_SIZE**2, float32
    regions: np.ndarray  # N x 4, float32: (x0, y0, x1, y1) of the image that the view shows

    def __len__(self):
        return len(self.labels)

    def subset(self, idx) -> "DecodedSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return DecodedSplit(
            self.images[idx], self.labels[idx], [self.names[i] for i in idx],
            [self.md5[i] for i in idx], self.thumbs[idx], self.regions[idx],
        )


def decode_split(split, data_config: dict, name: str, progress: bool = True,
                 views: bool = True) -> tuple[DecodedSplit, list]:
    """Decodes every image once into the model's view (eval transform of ``data_config``);
    unreadable files are collected, not raised. ``views=False`` keeps hashes and thumbnails only
    (images of size 0, regions NaN), for a split that is only audited for duplicates: the view is
    most of the time.

    Returns:
        The decoded split and the list of skipped (name, reason) pairs.
    """
    from tqdm.auto import tqdm

    to_view = EvalView(data_config) if views else lambda rgb: (np.zeros((0, 0, 3), np.uint8), [np.nan] * 4)
    images, labels, names, md5s, thumbs, regions, skipped = [], [], [], [], [], [], []
    for i, row in enumerate(tqdm(split, desc=f"decode {name}", disable=not progress, leave=False)):
        ref = row["image"]
        path = ref.get("path")
        label_name = CLASS_NAMES[row["label"]] if row["label"] >= 0 else ""  # -1: no class (a tumour of no given type)
        leaf = Path(path).name if path else f"row{i:06d}"
        file_id = f"{label_name}/{leaf}" if label_name else leaf
        try:
            data = ref["bytes"] if ref.get("bytes") is not None else Path(path).read_bytes()
            rgb = to_pil_rgb(bytes(data))
        except (OSError, ValueError) as e:
            skipped.append((f"{name}/{file_id}", str(e).split(":")[-1].strip() or type(e).__name__))
            continue
        view, region = to_view(rgb)
        images.append(np.asarray(view, dtype=np.uint8).transpose(2, 0, 1))
        labels.append(row["label"])
        names.append(file_id)
        md5s.append(hashlib.md5(data).hexdigest())
        thumbs.append(thumbnail(rgb))
        regions.append(region)
    if not images:
        raise DataError(f"The {name} split holds no readable images.")
    return DecodedSplit(
        np.stack(images), np.asarray(labels, dtype=np.int64), names, md5s, np.stack(thumbs),
        np.asarray(regions, dtype=np.float32),
    ), skipped


# ----------------------------------------------------------------------------- the split
@dataclass
class DataBundle:
    """Everything a run needs: decoded train / val / test and the duplicate audit."""

    train: DecodedSplit
    val: DecodedSplit
    test: DecodedSplit
    test_leak_free: np.ndarray  # bool mask over test
    report: DedupReport
    skipped: list
    tumour_train: DecodedSplit | None = None  # --tumour-present: slices known only to hold a tumour
    tumour_held_out: DecodedSplit | None = None
    extra_train: object = None  # --extra-sources: a mixing.ExtraSlices of other-source slices, split by subject
    extra_held_out: object = None
    extra_weights: object = None  # their sampling weights (sources, contrasts, planes balanced)
    extra_shares: dict | None = None  # each group's share of the drawn slices


def validation_mask(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Bool mask of a validation split: stratified by class, duplicate groups never straddle it."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, int(1 / fraction))
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if counts.min() < n_splits:
        raise DataError(
            f"Too few training images for a validation split: a class has {counts.min()} "
            f"images, at least {n_splits} are needed."
        )
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val_idx = next(sgkf.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[val_idx] = True
    return mask


def prepare_data(
    source: str,
    data_config: dict,
    val_fraction: float = TrainConfig.val_fraction,
    seed: int = TrainConfig.seed,
    drop_leaks: bool = True,
    progress: bool = True,
    with_val: bool = True,
    train_views: bool = True,
) -> DataBundle:
    """Loads, decodes, splits and audits the dataset.

    The validation split is stratified by class and grouped by near-duplicate group, so no
    group straddles train and validation. With ``drop_leaks`` training images that copy a
    validation or test image are dropped. ``train_views=False`` (evaluation: Training only
    audited) decodes no model views of Training (see :func:`decode_split`).
    """
    raw = load_raw_splits(source)
    train, skipped = decode_split(raw["train"], data_config, "train", progress, views=train_views)
    test, skipped_test = decode_split(raw["test"], data_config, "test", progress)
    skipped += skipped_test
    if skipped:
        logger.warning(
            "Skipped %d unreadable file(s): %s",
            len(skipped), "; ".join(f"{n} ({why})" for n, why in skipped),
        )
    exact, near = duplicate_groups(train.md5 + test.md5, np.concatenate([train.thumbs, test.thumbs]))
    is_val = validation_mask(train.labels, near[:len(train)], val_fraction, seed) if with_val else None
    report, keep, leak_free = audit_split({"exact": exact, "near": near}, is_val, len(test), drop_leaks)
    for line in report.lines():
        logger.info(line)
    val_idx = np.nonzero(is_val)[0] if with_val else []
    return DataBundle(
        train=train.subset(keep), val=train.subset(val_idx), test=test,
        test_leak_free=leak_free, report=report, skipped=skipped,
    )


# ----------------------------------------------------------------------------- loaders
class ArrayDataset(torch.utils.data.Dataset):
    """Serves (uint8 image tensor, label, index) from a :class:`DecodedSplit`, through ``transform`` (per image,
    uint8 in and out: :class:`~brain_mri.training.mri_augment.MRIAugment`) when one is given."""

    def __init__(self, split: DecodedSplit, transform=None):
        self.images = torch.from_numpy(split.images)
        self.labels = torch.from_numpy(split.labels)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.images[i] if self.transform is None else self.transform(self.images[i])
        return image, self.labels[i], i


def make_loader(split, batch_size: int, shuffle: bool, workers: int, seed: int = 0, drop_last: bool = False,
                transform=None, sampler=None):
    """DataLoader over decoded uint8 arrays (in ``sampler``'s order when one is given); workers slice tensors and
    run the per-image ``transform``."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        ArrayDataset(split, transform), batch_size=batch_size, shuffle=shuffle and sampler is None, drop_last=drop_last,
        sampler=sampler,
        num_workers=workers, persistent_workers=workers > 0, generator=g,
    )

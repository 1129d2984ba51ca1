"""Loading, validation split, duplicate audit and transforms.

The dataset is decoded once per run: every image becomes a uint8 array at the model's
input size (timm's eval resize / crop), held in memory; training augments whole batches
as tensors (see :class:`BatchAugment`), so the input pipeline costs almost nothing
beside the model step on a 2-core CPU.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .config import (
    CLASS_NAMES,
    IMAGE_EXTENSIONS,
    KAGGLE_SPLITS,
    NEAR_DUP_THRESHOLD,
    THUMB_SIZE,
)

logger = logging.getLogger(__name__)

# Decompression bombs are refused rather than decoded (PIL raises above 2x this).
Image.MAX_IMAGE_PIXELS = 64_000_000


class DataError(ValueError):
    """The dataset cannot be used as given; the message says why."""


# ----------------------------------------------------------------------------- images
def to_pil_rgb(image) -> Image.Image:
    """Converts a path, PIL image or numpy array of any mode or bit depth to 8-bit RGB.

    Grayscale and 16-bit / float images are rescaled to 0-255 from their own range;
    alpha is composited onto black (the MRI background).

    Raises:
        ValueError: the input is not an image, with a message that says what was given.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"No such image file: {path}")
        if path.suffix.lower() in (".dcm", ".dicom") or _is_dicom(path):
            return _array_to_rgb(read_dicom(path))
        return _open_image(path, path.name)
    if isinstance(image, (bytes, bytearray)):
        return _open_image(io.BytesIO(image), "the data")
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return _array_to_rgb(np.asarray(image))
        return image.convert("RGB")
    raise ValueError(
        f"Expected a file path, PIL image or numpy array, got {type(image).__name__}."
    )


def _open_image(fp, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                im.load()
                return to_pil_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(
            f"Cannot read {name}: it is too large to decode safely (a possible decompression bomb; "
            f"the limit is {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels)."
        ) from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"Cannot read {name} as an image: {e}") from e


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path) -> np.ndarray:
    """Pixel data of a single-frame DICOM file, with its modality LUT and window applied.

    Raises:
        ValueError: not a readable single-image DICOM file.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as e:  # optional dependency of the app
        raise ValueError("Reading DICOM needs pydicom: pip install pydicom") from e
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken files
        raise ValueError(f"Cannot read {Path(path).name} as DICOM: {e}") from e
    if getattr(ds, "NumberOfFrames", 1) not in (None, "", 1) and arr.ndim >= 3 and arr.shape[0] == int(ds.NumberOfFrames):
        raise ValueError(f"{Path(path).name} holds {ds.NumberOfFrames} frames; upload a single slice.")
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2").startswith("MONOCHROME"):
        arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)  # window centre / width when present
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = arr.max() - arr
    return np.asarray(arr)


def _array_to_rgb(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(
            f"Expected an image array of shape HxW, HxWx3 or HxWx4, got {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError("The image is empty.")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float64) / (65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0)
        arr = arr[..., :3] * alpha
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("The image holds NaN or infinite values.")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    return image.convert("RGB")


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
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise DataError(
                f"{split_dir}: class folders do not match ({'; '.join(parts)}). "
                f"Expected exactly: {', '.join(CLASS_NAMES)}."
            )


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
        ds = datasets.load_dataset("imagefolder", data_files=data_files)
    elif "/" in source and not source.startswith((".", "/")) and not Path(source).exists():
        from .hub import hub_unreachable_reason

        reason = hub_unreachable_reason()
        if reason:
            raise DataError(
                f"Cannot load the Hub dataset {source!r}: {reason}. Pass a local folder in the "
                "Kaggle layout instead (Training/<class>/, Testing/<class>/)."
            )
        try:
            ds = datasets.load_dataset(source)
        except Exception as e:  # datasets raises many types; the user needs the message
            raise DataError(f"Cannot load the Hub dataset {source!r}: {e}") from e
    else:
        raise DataError(f"No such data folder: {source}")

    for split in ("train", "test"):
        if split not in ds:
            raise DataError(f"{source} has no {split!r} split (found: {', '.join(ds)}).")
    ds = datasets.DatasetDict({s: _standardise(ds[s], source) for s in ("train", "test")})
    return ds


def _standardise(split, source):
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
        remap = {i: CLASS_NAMES.index(n) for i, n in enumerate(names)}
        split = split.map(lambda r: {"label": remap[r["label"]]})
    return split


# ----------------------------------------------------------------------------- decoding
@dataclass
class DecodedSplit:
    """One split decoded once: model-size uint8 arrays, labels, file ids, hashes, thumbnails."""

    images: np.ndarray  # N x 3 x S x S, uint8
    labels: np.ndarray  # N, int64
    names: list  # file name relative to the split folder, or a row id
    md5: list
    thumbs: np.ndarray  # N x THUMB_SIZE**2, float32

    def __len__(self):
        return len(self.labels)

    def subset(self, idx) -> "DecodedSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return DecodedSplit(
            self.images[idx], self.labels[idx], [self.names[i] for i in idx],
            [self.md5[i] for i in idx], self.thumbs[idx],
        )


def thumbnail(image: Image.Image) -> np.ndarray:
    """The near-duplicate signature: a 16x16 grayscale box-filtered thumbnail."""
    return np.asarray(
        image.convert("L").resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX), dtype=np.float32
    ).ravel()


def decode_split(split, geometric, name: str, progress: bool = True) -> tuple[DecodedSplit, list]:
    """Decodes every image once; unreadable files are collected, not raised.

    Returns:
        The decoded split and the list of skipped (name, reason) pairs.
    """
    from tqdm.auto import tqdm

    images, labels, names, md5s, thumbs, skipped = [], [], [], [], [], []
    for i, row in enumerate(tqdm(split, desc=f"decode {name}", disable=not progress, leave=False)):
        ref = row["image"]
        path = ref.get("path")
        label_name = CLASS_NAMES[row["label"]]
        file_id = f"{label_name}/{Path(path).name}" if path else f"{label_name}/row{i:06d}"
        try:
            data = ref["bytes"] if ref.get("bytes") is not None else Path(path).read_bytes()
            rgb = to_pil_rgb(bytes(data))
        except (OSError, ValueError) as e:
            skipped.append((f"{name}/{file_id}", str(e).split(":")[-1].strip() or type(e).__name__))
            continue
        images.append(np.asarray(geometric(rgb), dtype=np.uint8).transpose(2, 0, 1))
        labels.append(row["label"])
        names.append(file_id)
        md5s.append(hashlib.md5(data).hexdigest())
        thumbs.append(thumbnail(rgb))
    if not images:
        raise DataError(f"The {name} split holds no readable images.")
    return DecodedSplit(
        np.stack(images), np.asarray(labels, dtype=np.int64), names, md5s, np.stack(thumbs)
    ), skipped


# ----------------------------------------------------------------------------- duplicates
def duplicate_groups(md5: list, thumbs: np.ndarray, threshold: float = NEAR_DUP_THRESHOLD):
    """Groups images that are exact (same bytes) or near (thumbnail distance) copies.

    Returns:
        Two int arrays of group ids, ``exact`` and ``near`` (near groups include exact ones);
        images with the same id are copies of each other.
    """
    n = len(md5)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first = {}
    for i, h in enumerate(md5):
        union(i, first.setdefault(h, i))
    exact = np.array([find(i) for i in range(n)])

    t = torch.from_numpy(np.ascontiguousarray(thumbs, dtype=np.float32))
    for start in range(0, n, 1024):
        d = torch.cdist(t[start:start + 1024], t, p=1) / t.shape[1]
        rows, cols = torch.nonzero(d <= threshold, as_tuple=True)
        for i, j in zip((rows + start).tolist(), cols.tolist()):
            if i < j:
                union(i, j)
    near = np.array([find(i) for i in range(n)])
    return exact, near


@dataclass
class DedupReport:
    """Duplicate counts within and across splits.

    ``within[kind][split]``: extra copies inside a split (images minus groups).
    ``across[kind]["a-b"]``: images of split b that have a copy in split a.
    """

    within: dict = field(default_factory=dict)
    across: dict = field(default_factory=dict)
    dropped_train: int = 0
    leak_free_test: int = 0
    test_total: int = 0
    threshold: float = NEAR_DUP_THRESHOLD

    def as_dict(self):
        return {
            "within": self.within, "across": self.across, "dropped_train": self.dropped_train,
            "leak_free_test": self.leak_free_test, "test_total": self.test_total,
            "near_threshold": self.threshold,
        }

    def lines(self):
        out = []
        for kind in ("exact", "near"):
            w = ", ".join(f"{s} {v}" for s, v in self.within[kind].items())
            a = ", ".join(f"{p} {v}" for p, v in self.across[kind].items())
            out.append(f"{kind} duplicates - extra copies within: {w}; images with a copy across: {a}")
        out.append(f"training images dropped (copies of validation/test images): {self.dropped_train}")
        out.append(f"leak-free test images (no copy in Training): {self.leak_free_test} of {self.test_total}")
        return out


def audit(groups: dict, splits: dict) -> tuple[dict, dict]:
    """Counts duplicates within and across splits.

    Args:
        groups: ``{"exact": ids, "near": ids}`` over all images.
        splits: ``{split_name: bool mask}`` over the same images.
    """
    within, across = {}, {}
    names = list(splits)
    for kind, ids in groups.items():
        within[kind] = {s: int(m.sum() - len(np.unique(ids[m]))) for s, m in splits.items()}
        across[kind] = {}
        for a_i, a in enumerate(names):
            for b in names[a_i + 1:]:
                in_a = set(ids[splits[a]].tolist())
                across[kind][f"{a}-{b}"] = int(sum(g in in_a for g in ids[splits[b]].tolist()))
    return within, across


# ----------------------------------------------------------------------------- the bundle
@dataclass
class DataBundle:
    """Everything a run needs: decoded train / val / test and the duplicate audit."""

    train: DecodedSplit
    val: DecodedSplit
    test: DecodedSplit
    test_leak_free: np.ndarray  # bool mask over test
    report: DedupReport
    skipped: list


def split_eval_transform(data_config: dict):
    """timm's eval transform for ``data_config``, split where the image becomes a tensor.

    Returns:
        ``(geometric, tensorize)``: resize / crop (PIL -> PIL) and to-tensor + normalise;
        composed, they are exactly ``timm.data.create_transform(..., is_training=False)``.
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    steps = create_transform(**data_config, is_training=False).transforms
    first = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
    return T.Compose(steps[:first]), T.Compose(steps[first:])


def prepare_data(
    source: str,
    data_config: dict,
    val_fraction: float = 0.15,
    seed: int = 42,
    drop_leaks: bool = True,
    progress: bool = True,
    with_val: bool = True,
) -> DataBundle:
    """Loads, decodes, splits and audits the dataset.

    The validation split is stratified by class and grouped by near-duplicate group, so no
    group straddles train and validation. With ``drop_leaks`` training images that copy a
    validation or test image are dropped.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    raw = load_raw_splits(source)
    geometric, _ = split_eval_transform(data_config)
    train, skipped = decode_split(raw["train"], geometric, "train", progress)
    test, skipped_test = decode_split(raw["test"], geometric, "test", progress)
    skipped += skipped_test
    if skipped:
        logger.warning(
            "Skipped %d unreadable file(s): %s",
            len(skipped), "; ".join(f"{n} ({why})" for n, why in skipped),
        )

    n_tr = len(train)
    exact, near = duplicate_groups(train.md5 + test.md5, np.concatenate([train.thumbs, test.thumbs]))
    groups = {"exact": exact, "near": near}

    is_val = np.zeros(n_tr, dtype=bool)
    if with_val:
        n_splits = max(2, int(1 / val_fraction))
        counts = np.bincount(train.labels, minlength=len(CLASS_NAMES))
        if counts.min() < n_splits:
            raise DataError(
                f"Too few training images for a validation split: a class has {counts.min()} "
                f"images, at least {n_splits} are needed."
            )
        sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, val_idx = next(sgkf.split(np.zeros(n_tr), train.labels, near[:n_tr]))
        is_val[val_idx] = True

    is_test = np.r_[np.zeros(n_tr, bool), np.ones(len(test), bool)]
    masks = {
        "train": np.r_[~is_val, np.zeros(len(test), bool)],
        "val": np.r_[is_val, np.zeros(len(test), bool)],
        "test": is_test,
    }
    if not with_val:
        masks.pop("val")
    within, across = audit(groups, masks)

    held_out = set(near[masks["test"]].tolist()) | (set(near[masks["val"]].tolist()) if with_val else set())
    train_idx = np.nonzero(~is_val)[0]
    leaky = np.array([near[i] in held_out for i in train_idx], dtype=bool)
    keep = train_idx[~leaky] if drop_leaks else train_idx
    training_groups = set(near[:n_tr].tolist())
    leak_free = np.array([g not in training_groups for g in near[n_tr:]], dtype=bool)

    report = DedupReport(
        within=within, across=across, dropped_train=int(leaky.sum()) if drop_leaks else 0,
        leak_free_test=int(leak_free.sum()), test_total=len(test),
    )
    for line in report.lines():
        logger.info(line)
    return DataBundle(
        train=train.subset(keep), val=train.subset(np.nonzero(is_val)[0]), test=test,
        test_leak_free=leak_free, report=report, skipped=skipped,
    )


# ----------------------------------------------------------------------------- tensors
class ArrayDataset(torch.utils.data.Dataset):
    """Serves (uint8 image tensor, label, index) from a :class:`DecodedSplit`."""

    def __init__(self, split: DecodedSplit):
        self.images = torch.from_numpy(split.images)
        self.labels = torch.from_numpy(split.labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i], i


class Normalize(torch.nn.Module):
    """uint8 batch -> float batch normalised with the model's mean / std (as timm's ToTensor + Normalize)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0, persistent=False)

    def forward(self, x):
        return (x.float() - self.mean) / self.std


class BatchAugment(torch.nn.Module):
    """Anatomy-preserving augmentation of a whole uint8 batch in one pass.

    Left-right flip, rotation of a few degrees, mild zoom (never a crop that could cut a
    tumour out: zoom-in stays within 10%) and shift, brightness and contrast. One affine
    grid for the batch keeps it far cheaper than per-image PIL ops.
    """

    def __init__(self, hflip=0.5, degrees=10.0, scale=(0.9, 1.1), shift=0.06, brightness=0.15, contrast=0.15):
        super().__init__()
        self.hflip, self.degrees, self.scale, self.shift = hflip, degrees, scale, shift
        self.brightness, self.contrast = brightness, contrast

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        x = x.float()

        def u(lo, hi):
            return torch.rand(n, generator=generator) * (hi - lo) + lo

        angle = u(-self.degrees, self.degrees) * torch.pi / 180
        zoom = u(*self.scale)
        flip = torch.where(torch.rand(n, generator=generator) < self.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([
            torch.stack([cos * flip, -sin, u(-self.shift, self.shift) * 2], 1),
            torch.stack([sin * flip, cos, u(-self.shift, self.shift) * 2], 1),
        ], 1).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        b = u(1 - self.brightness, 1 + self.brightness).to(x.device).view(n, 1, 1, 1)
        c = u(1 - self.contrast, 1 + self.contrast).to(x.device).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * c + mean * b).clamp(0, 255)

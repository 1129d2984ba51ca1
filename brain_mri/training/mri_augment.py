"""MRI augmentations that break the Kaggle set's shortcuts (source, contrast, skull), per training image.

In the Kaggle set every "no tumour" slice comes from one source, many T2-weighted, most tumour slices are T1
post-contrast, and every slice shows the skull. These change what a slice looks like but not whether it holds a
tumour: contrast (TorchIO's gamma, monotonic and non-monotonic intensity remaps, inversion inside the head), the
scanner (TorchIO's bias field, noise, blur, ghosting, motion, thick slices; JPEG re-encoding) and the preprocessing
(skull stripping). Intensity only: the geometry stays with :class:`~brain_mri.transforms.BatchAugment`, whose
tumour boxes follow it. Training code: serving never imports it.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import torch

from ..config import MRI_AUGMENT_PRESETS as PRESETS


def from_preset(name: str) -> "MRIAugment | None":
    """The augmentation a :data:`PRESETS` name stands for; None for ``none``."""
    return MRIAugment(PRESETS[name]) if PRESETS[name] else None


class MRIAugment:
    """One image at a time: a ``(3, S, S)`` uint8 tensor in, the same out (grey, as MRI is).

    Args:
        p: probability of each step (a :data:`PRESETS` entry); missing steps never run.
    """

    def __init__(self, p: dict):
        import torchio as tio

        self.p = dict(p)
        scanner = {"gamma": lambda p: tio.RandomGamma(log_gamma=(-0.4, 0.4), p=p),
                   "bias": lambda p: tio.RandomBiasField(coefficients=0.5, p=p),
                   "noise": lambda p: tio.RandomNoise(std=(0.0, 0.04), p=p),
                   "blur": lambda p: tio.RandomBlur(std=(0.3, 1.2), p=p),
                   "ghosting": lambda p: tio.RandomGhosting(intensity=(0.2, 0.5), p=p),
                   "motion": lambda p: tio.RandomMotion(degrees=4, translation=4, num_transforms=2, p=p),
                   "anisotropy": lambda p: tio.RandomAnisotropy(axes=(0, 1), downsampling=(1.5, 4), p=p)}
        # TorchIO takes 2-D images as (C, W, H, 1) tensors; each step runs with its own probability
        self.scanner = tio.Compose([make(self.p[k]) for k, make in scanner.items() if self.p.get(k)])

    def __repr__(self):
        return f"MRIAugment({self.p})"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        grey = image.float().mean(0).numpy() / 255.0  # (S, S) in [0, 1]
        head = None  # found only when a step needs it: most images take neither
        if _chance(self.p.get("skull_strip")):
            head = head_mask(grey)
            grey = strip_skull(grey, head)
        if _chance(self.p.get("contrast")):
            grey = remap(grey, monotonic=_chance(0.7))
        if _chance(self.p.get("invert")):
            grey = invert_inside(grey, head_mask(grey) if head is None else head)
        if len(self.scanner.transforms):
            out = self.scanner(torch.from_numpy(grey.astype(np.float32))[None, :, :, None])
            grey = out[0, :, :, 0].numpy()
        if _chance(self.p.get("jpeg")):
            grey = jpeg(grey, int(torch.randint(30, 91, ()).item()))
        grey8 = torch.from_numpy(np.clip(np.round(grey * 255.0), 0, 255).astype(np.uint8))
        return grey8.expand(3, *grey8.shape).clone()


def augmented_copy(split, augment: MRIAugment, seed: int = 0):
    """A :class:`~brain_mri.training.data.DecodedSplit` whose images went through ``augment`` once each, the same on every
    call (``seed``; the global random state is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        images = np.stack([augment(torch.from_numpy(image)).numpy() for image in split.images])
    return dataclasses.replace(split, images=images)


def _chance(p) -> bool:
    return bool(p) and torch.rand(()).item() < p


def head_mask(grey: np.ndarray) -> np.ndarray:
    """The head of a [0, 1] slice: :func:`brain_mri.evaluation.localise.head_mask`, its largest component only."""
    from scipy import ndimage

    from ..evaluation.localise import head_mask as filled_head

    mask = filled_head(grey[..., None] * 255.0)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == (np.bincount(labels.ravel())[1:].argmax() + 1)
    return mask


def strip_skull(grey: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The brain kept, the skull ring darkened: the head mask eroded by 5-12% of the head's width."""
    from scipy import ndimage

    if head.sum() < 100:
        return grey
    width = np.ptp(np.nonzero(head.any(0))[0]) + 1
    depth = max(1, int(width * float(torch.empty(()).uniform_(0.05, 0.12))))
    brain = ndimage.binary_erosion(head, iterations=depth)
    return grey * (brain if brain.any() else head)


def remap(grey: np.ndarray, monotonic: bool = True, knots: int = 5) -> np.ndarray:
    """A random intensity curve through ``knots`` points: increasing when ``monotonic`` (a new contrast with the
    same order of tissues), else any (tissues change places, as between T1 and T2). Black stays black."""
    xs = np.linspace(0, 1, knots)
    ys = np.sort(torch.rand(knots).numpy()) if monotonic else torch.rand(knots).numpy()
    ys[0] = 0.0
    return np.interp(grey, xs, ys / max(ys.max(), 1e-6))


def invert_inside(grey: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Bright and dark swapped inside the head, black outside: T1-like becomes T2-like and back."""
    if not head.any():
        return grey
    inside = grey[head]
    low, high = np.percentile(inside, (1, 99))
    return np.where(head, np.clip(high + low - grey, 0, 1), 0.0)


def jpeg(grey: np.ndarray, quality: int) -> np.ndarray:
    """``grey`` through JPEG at ``quality`` (web-gathered slices carry its blocks)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(grey * 255), 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer), dtype=np.float64) / 255.0

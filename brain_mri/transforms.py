"""Transforms: the head crop, the model's eval transform, uint8 -> normalised tensors, batch augmentation, mixup.

Training and evaluation hold images as model-size uint8 arrays and turn whole batches into
tensors here, so the input pipeline costs almost nothing beside the model step on a 2-core CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image

from .config import OWN_CONFIG_KEYS


#: Head crop: grey level above which a pixel may be head, and the margin around the head (share of its size).
HEAD_CROP = {"threshold": 20, "margin": 0.04}


def head_box(image, threshold: int = HEAD_CROP["threshold"], margin: float = HEAD_CROP["margin"]):
    """A square ``(x0, y0, x1, y1)`` around the head of a PIL image: the bounding box of the largest
    component brighter than ``threshold``, widened by ``margin`` on each side and squared about its
    centre (it can reach past the image). Without such a component (1% of the image), the whole image."""
    import numpy as np
    from scipy import ndimage

    grey = image.convert("L")
    grey.thumbnail((256, 256))  # the box needs no more detail; large uploads stay fast
    fx, fy = image.width / grey.width, image.height / grey.height
    mask = ndimage.binary_opening(np.asarray(grey) > threshold, iterations=2)  # specks and text are not head
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    if n and sizes.max() >= 0.01 * mask.size:
        ys, xs = np.nonzero(labels == sizes.argmax() + 1)
        x0, y0, x1, y1 = xs.min() * fx, ys.min() * fy, (xs.max() + 1) * fx, (ys.max() + 1) * fy
    else:
        x0, y0, x1, y1, margin = 0, 0, image.width, image.height, 0.0
    side = max(1, round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    if side * side > Image.MAX_IMAGE_PIXELS:  # a square around a very long image
        raise ValueError(f"A {image.width} x {image.height} image is too elongated to analyse: "
                         "a brain MRI slice is about as wide as it is high.")
    left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
    return left, top, left + side, top + side


def crop_to_head(image, threshold: int = HEAD_CROP["threshold"], margin: float = HEAD_CROP["margin"]):
    """The square around the head of a PIL image (:func:`head_box`), padded with black where it
    reaches past the image. Models trained with ``--head-crop`` expect it before timm's transform:
    apply it first when you feed such a model through timm or transformers."""
    return image.crop(head_box(image, threshold, margin))


class HeadCrop:
    """:func:`crop_to_head` as a transform step."""

    def __init__(self, threshold: int = HEAD_CROP["threshold"], margin: float = HEAD_CROP["margin"]):
        self.threshold, self.margin = threshold, margin

    def __call__(self, image):
        return crop_to_head(image, self.threshold, self.margin)

    def __repr__(self):
        return f"HeadCrop(threshold={self.threshold}, margin={self.margin})"


def split_eval_transform(data_config: dict):
    """The model's eval transform for ``data_config``, split where the image becomes a tensor.

    Returns:
        ``(geometric, tensorize)``: head crop (when ``data_config["head_crop"]`` is set), resize /
        crop (PIL -> PIL), and to-tensor + normalise; past the head crop they are exactly
        ``timm.data.create_transform(..., is_training=False)``.
    """
    from torchvision import transforms as T

    resize, tensorize = _timm_eval(data_config)
    crop = [HeadCrop(**data_config["head_crop"])] if data_config.get("head_crop") else []
    return T.Compose(crop + [resize]), tensorize


def _timm_eval(data_config: dict):
    from timm.data import create_transform
    from torchvision import transforms as T

    timm_config = {k: v for k, v in data_config.items() if k not in OWN_CONFIG_KEYS}
    steps = create_transform(**timm_config, is_training=False).transforms
    first = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
    return T.Compose(steps[:first]), T.Compose(steps[first:])


class EvalView:
    """PIL image -> ``(view, region)``: the model's view (the geometric half of
    :func:`split_eval_transform`) and the rectangle of the image it shows (:func:`view_region`),
    with the head found once for both."""

    def __init__(self, data_config: dict):
        self.data_config = data_config
        self.resize, self.tensorize = _timm_eval(data_config)  # tensorize: the other half, view -> tensor

    def __call__(self, image):
        cropped, region = _crop_and_region(image, self.data_config)
        return self.resize(cropped), region


def view_region(image, data_config: dict) -> tuple[float, float, float, float]:
    """The rectangle ``(x0, y0, x1, y1)`` of a PIL image that the eval transform of ``data_config``
    turns into the model's square view (it can reach past the image: padding)."""
    return _crop_and_region(image, data_config)[1]


def _crop_and_region(image, data_config: dict):
    x0 = y0 = 0
    if data_config.get("head_crop"):
        x0, y0, _, _ = box = head_box(image, **data_config["head_crop"])
        image = image.crop(box)
    rx0, ry0, rx1, ry1 = _timm_region(image.size, data_config)
    return image, (x0 + rx0, y0 + ry0, x0 + rx1, y0 + ry1)


def _timm_region(size: tuple[int, int], data_config: dict) -> tuple[float, float, float, float]:
    w, h = size
    s = data_config["input_size"][-1]
    scale = s / math.floor(s / (data_config.get("crop_pct") or 1.0))  # timm's scale_size, as a ratio
    mode = data_config.get("crop_mode") or "center"
    if mode == "squash":  # each edge resized on its own, then a centred crop
        cw, ch = w * scale, h * scale
    else:  # the shorter edge ("center") or the longer one ("border", padded) resized, then a centred crop
        cw = ch = (max(w, h) if mode == "border" else min(w, h)) * scale
    return (w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2


class Normalize(torch.nn.Module):
    """uint8 batch -> float batch normalised with the model's mean / std (as timm's ToTensor + Normalize)."""

    def __init__(self, mean, std, channels_last: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x):
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)


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

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, masks: torch.Tensor | None = None):
        """Augments ``x``; ``masks`` (N x 1 x H x W, e.g. tumour boxes) follow the same geometry and
        come back beside it: ``(x, masks)``."""
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
        x = ((x - mean) * c + mean * b).clamp(0, 255)
        if masks is None:
            return x
        return x, F.grid_sample(masks.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def make_mixup(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
    """timm's batch Mixup / CutMix (switching 50/50 when both alphas are set), or None when both are 0.

    Its own label smoothing stays off: the loss smooths the mixed targets, as it does plain labels.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"--mixup and --cutmix take an alpha >= 0, got {mixup_alpha} and {cutmix_alpha}.")
    if not (mixup_alpha or cutmix_alpha):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=0.0, num_classes=num_classes)


def mix_batch(mixup, inputs: torch.Tensor, labels: torch.Tensor):
    """(inputs, targets): mixed inputs and soft targets, or the batch as it is without ``mixup`` or
    when the batch is odd (timm pairs each image with its mirror in the batch)."""
    if mixup is None or inputs.shape[0] % 2:
        return inputs, labels
    return mixup(inputs, labels)

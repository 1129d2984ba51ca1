"""Box-guided training ("right for the right reasons"): class evidence belongs inside the tumour box.

For a global-average-pool + linear head, the class activation map is the head applied to the
last feature map: cheap and differentiable. The loss is the share of the true class's evidence
that lies outside where it should be: its spatial softmax (not a ReLU'd map, which a model can
empty by pushing every cell negative) against a soft mask, the share of each feature cell that
the tumour box covers (at 5x5 most boxes hold no cell centre). On "no tumour" images the mask
is the head: evidence there belongs to the anatomy, not to the background.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import CLASS_NAMES
from ..evaluation.localise import box_in_view, head_mask

NO_TUMOUR = CLASS_NAMES.index("notumor")


def view_boxes(names: list, regions: np.ndarray, size: int, boxes: dict, folder: str) -> np.ndarray:
    """N x 4 tumour boxes in the model's view (pixels of the S x S input), NaN where an image has none.

    Args:
        names: ``class/file`` of each image; ``regions``: where each view lies in its image.
        boxes: from :func:`~brain_mri.evaluation.localise.load_boxes`; ``folder``: ``Training`` or ``Testing``.
    """
    out = np.full((len(names), 4), np.nan, dtype=np.float32)
    for i, (name, region) in enumerate(zip(names, regions)):
        box = boxes.get(f"{folder}/{name}")
        if box is not None:
            out[i] = box_in_view(box, region, size)
    return out


def guide_masks(images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor):
    """Where each image's class evidence belongs, before augmentation.

    Returns:
        ``(masks, weights)``: N x 1 x S x S in {0, 1} (the box; the head for "no tumour"), and N
        weights, 1 where the image is guided (a box, or "no tumour"), else 0.
    """
    n, _, h, w = images.shape
    ys = torch.arange(h, device=images.device).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=images.device).view(1, 1, w) + 0.5
    b = torch.nan_to_num(boxes, nan=-1.0).view(n, 4, 1, 1)
    in_box = (xs >= b[:, 0]) & (xs <= b[:, 2]) & (ys >= b[:, 1]) & (ys <= b[:, 3])
    boxed = ~torch.isnan(boxes).any(1)
    # the same head as the metric's (closed, holes filled: ventricles are head)
    head = torch.from_numpy(np.stack([head_mask(im.permute(1, 2, 0).cpu().numpy()) for im in images])).to(images.device)
    no_tumour = labels == NO_TUMOUR
    masks = torch.where(boxed.view(n, 1, 1), in_box, head & no_tumour.view(n, 1, 1))
    return masks.unsqueeze(1).float(), (boxed | no_tumour).float()


def evidence_outside(features: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor, masks: torch.Tensor,
                     weights: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean share (over guided images) of the true class's spatial-softmax evidence outside ``masks``.

    Args:
        features: B x C x h x w, the map the head pools; ``head``: its linear classifier.
        masks: B x 1 x S x S, augmented like the images (soft after resampling).
    """
    cam = torch.einsum("bchw,bc->bhw", features.float(), head.weight[labels].float()) + head.bias[labels].float().view(-1, 1, 1)
    p = torch.softmax(cam.flatten(1) / temperature, dim=1)
    cover = F.adaptive_avg_pool2d(masks, features.shape[-2:]).flatten(1).clamp(0, 1)
    outside = (p * (1 - cover)).sum(1)
    return (outside * weights).sum() / weights.sum().clamp(min=1.0)


def check_guidable(model: torch.nn.Module):
    """``(head, layer)``: the linear head of a global-average-pool model and the layer it pools, or a
    clear error for ``--box-loss``."""
    from ..serving.explain import pooled_layer

    found = pooled_layer(model)
    if found is None:
        raise ValueError(f"--box-loss needs a model whose head is global average pooling + a linear layer over its "
                         f"CAM layer (ResNet, EfficientNet, RegNet); {type(model).__name__} is not such a model.")
    return found


class Guide:
    """What a guided step needs: the training split's boxes in the view, the head, the layer it pools, the weight."""

    def __init__(self, model: torch.nn.Module, boxes: np.ndarray, weight: float):
        self.head, self.layer = check_guidable(model)
        self.boxes = torch.from_numpy(boxes)
        self.weight = weight

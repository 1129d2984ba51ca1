"""Grad-CAM explanations (pytorch-grad-cam): target layers for timm families, CAMs, overlays."""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..config import CAM_METHODS


class UnsupportedArchitecture(ValueError):
    """No rule picks a CAM target layer for this model; pass ``target_layer`` explicitly."""


def get_module(model: torch.nn.Module, dotted: str) -> torch.nn.Module:
    """``model`` attribute by dotted path, list indices allowed: ``"layer4.-1"``, ``"blocks[-1].norm1"``."""
    module = model
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        if not part:
            continue
        try:
            module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
        except (AttributeError, IndexError, TypeError) as e:
            raise UnsupportedArchitecture(f"{type(model).__name__} has no module {dotted!r} ({e}).") from e
    return module


def vit_reshape(tensor: torch.Tensor, num_prefix_tokens: int, grid_size) -> torch.Tensor:
    """ViT tokens (B, prefix + H*W, C) -> (B, C, H, W), dropping class / register tokens."""
    h, w = grid_size
    x = tensor[:, num_prefix_tokens:, :]
    return x.reshape(x.shape[0], h, w, x.shape[-1]).permute(0, 3, 1, 2)


def nhwc_to_nchw(tensor: torch.Tensor) -> torch.Tensor:
    """Swin blocks keep (B, H, W, C)."""
    return tensor.permute(0, 3, 1, 2)


def target_layer_for(model: torch.nn.Module, target_layer: str | None = None):
    """The layer to hook and the reshape transform for a timm model.

    Rules: ResNet ``layer4[-1]``; EfficientNet / MobileNetV2 ``bn2`` (or ``conv_head``);
    MobileNetV3 ``blocks[-1]``;
    ConvNeXt ``stages[-1]``; RegNet ``s4``; ViT / DeiT ``blocks[-1].norm1`` with prefix
    tokens dropped and tokens reshaped to ``patch_embed.grid_size``; Swin
    ``layers[-1].blocks[-1].norm1`` (NHWC).

    Args:
        target_layer: a dotted path (``"layer4.-1"``) that overrides the rules; for token
            outputs (ViT) the reshape still follows the model.

    Raises:
        UnsupportedArchitecture: no rule applies and no ``target_layer`` was given.
    """
    reshape = None
    if hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens"):
        grid = model.patch_embed.grid_size
        reshape = partial(vit_reshape, num_prefix_tokens=model.num_prefix_tokens, grid_size=grid)
        default = "blocks.-1.norm1"
    elif hasattr(model, "layers") and type(model).__name__.startswith("SwinTransformer"):
        reshape = nhwc_to_nchw
        default = "layers.-1.blocks.-1.norm1"
    elif hasattr(model, "layer4"):
        default = "layer4.-1"
    elif hasattr(model, "stages") and type(model).__name__ == "ConvNeXt":
        default = "stages.-1"
    elif type(model).__name__ == "MobileNetV3":
        default = "blocks.-1"  # its conv_head comes after global pooling: no spatial map
    elif hasattr(model, "bn2") and hasattr(model, "conv_head"):
        default = "bn2"
    elif hasattr(model, "conv_head"):
        default = "conv_head"
    elif hasattr(model, "s4"):
        default = "s4"
    elif target_layer is None:
        raise UnsupportedArchitecture(
            f"No automatic Grad-CAM layer for {type(model).__name__}. Name one: "
            "BrainMRIClassifier.explain(..., target_layer='dotted.path.to.layer'), e.g. 'stages.-1'."
        )
    return get_module(model, target_layer or default), reshape


def cam_layers(model: torch.nn.Module, target_layer: str | None = None):
    """``(layers, reshape)`` for a CAM: :func:`target_layer_for` of each comma-separated path of
    ``target_layer`` (``"layer3.-1,layer4.-1"``: pytorch-grad-cam averages their maps, finer and
    multi-scale), or of the family's rule."""
    names = [name.strip() for name in target_layer.split(",")] if target_layer else [None]
    found = [target_layer_for(model, name) for name in names]
    return [layer for layer, _ in found], found[0][1]


#: Longest side of the image an explanation is drawn on; larger uploads are shown scaled down.
MAX_SIDE = 2048


@dataclass
class Explanation:
    """The result of one explained prediction, in the coordinates of the input image."""

    probabilities: dict  # class -> probability
    target: str  # the class the CAM explains
    heatmap: np.ndarray  # H x W float32 in [0, 1], aligned with `image`; 0 where the model did not look
    image: np.ndarray  # H x W x 3 uint8, the input at its own size (scaled down past MAX_SIDE)
    overlay: np.ndarray  # H x W x 3 uint8, the heatmap over `image`
    method: str
    view: np.ndarray  # S x S x 3 uint8, the input as the model sees it (cropped / resized)
    warning: str | None = None  # why the image is not taken for a brain MRI slice (no answer then)
    ood_score: float | None = None  # distance to the training features (brain_mri.serving.ood); None without a detector

    @property
    def predicted(self) -> str:
        """The most probable class."""
        return max(self.probabilities, key=self.probabilities.get)


def display_image(rgb) -> np.ndarray:
    """``rgb`` (PIL) as the uint8 array explanations are drawn on: its own size, at most MAX_SIDE."""
    if max(rgb.size) > MAX_SIDE:
        rgb = rgb.copy()
        rgb.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.asarray(rgb, dtype=np.uint8)


def heatmap_on_image(heatmap: np.ndarray, region, size: tuple[int, int]) -> np.ndarray:
    """Puts a view's heatmap back where the view came from in an image of ``size`` (W, H).

    Args:
        heatmap: S x S map over the model's view.
        region: ``(x0, y0, x1, y1)`` of the image that the view shows (see
            :func:`~brain_mri.transforms.view_region`); it may reach past the image.
    """
    import cv2

    w, h = size
    x0, y0, x1, y1 = (round(v) for v in region)
    placed = cv2.resize(heatmap, (max(1, x1 - x0), max(1, y1 - y0)), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((h, w), np.float32)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0:iy1, ix0:ix1] = placed[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return out


def make_overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Colour ``heatmap`` over ``image`` (uint8 RGB); ``opacity``, the heatmap's weight, is from 0 to 1."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255.0, heatmap, use_rgb=True, image_weight=1.0 - opacity)


def compute_cam(model, input_tensor, method: str = "gradcam", target_index: int | None = None,
                target_layer: str | None = None, data_config: dict | None = None):
    """(logits of the batch, CAM of the first image).

    Args:
        target_layer: dotted layer path(s); default the model's own (``data_config["cam_layer"]``, from
            ``config.json``), else the family's rule. Resolved here, so no caller does.

    Grad-CAM on the map a global-average-pool + linear head pools is that head's weights applied to the
    map (:func:`pooled_gradcam`): one forward pass, no backward. Everything else is pytorch-grad-cam, one
    forward and one backward pass; its CAM object is a context manager, so its hooks are removed whatever happens.
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in CAM_METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}.")
    layers, reshape = cam_layers(model, target_layer or (data_config or {}).get("cam_layer"))
    pooled = pooled_layer(model) if method == "gradcam" and reshape is None and len(layers) == 1 else None
    if pooled is not None and pooled[1] is layers[0]:
        with torch.inference_mode(), LayerTap(layers[0]) as tap:
            logits = model(input_tensor).float()
        index = logits.argmax(1) if target_index is None else torch.full((len(logits),), target_index)
        return logits, pooled_gradcam(tap.output, pooled[0], index, input_tensor.shape[-2:])[0]
    cam_cls = getattr(pytorch_grad_cam, CAM_METHODS[method][0])
    targets = None if target_index is None else [ClassifierOutputTarget(target_index)] * input_tensor.shape[0]
    with _grad_only_from(model, layers), \
            cam_cls(model=model, target_layers=layers, reshape_transform=reshape) as cam:
        grayscale = cam(input_tensor=input_tensor, targets=targets)
        logits = cam.outputs.detach().float()
    return logits, grayscale[0].astype(np.float32)


def pooled_gradcam(features: torch.Tensor, head: torch.nn.Linear, index: torch.Tensor, size) -> np.ndarray:
    """Grad-CAM from the forward pass alone (B x H x W in [0, 1], at ``size``).

    With ``logit = head(mean over cells of features)``, the gradient of class c's logit at every cell of
    channel k is ``head.weight[c, k] / cells``: Grad-CAM's channel weights need no backward pass. The map
    is then scaled as pytorch-grad-cam scales its own (one layer, then the multi-layer aggregation).
    """
    from pytorch_grad_cam.utils.image import scale_cam_image

    h, w = features.shape[-2:]
    with torch.no_grad():
        weights = head.weight[index.to(head.weight.device)].float() / (h * w)
        cam = np.maximum(torch.einsum("bchw,bc->bhw", features.float(), weights).cpu().numpy(), 0)
    return scale_cam_image(np.maximum(scale_cam_image(cam, (int(size[1]), int(size[0]))), 0))


_POOLED = weakref.WeakKeyDictionary()


def pooled_layer(model: torch.nn.Module):
    """``(head, layer)``: the linear head of a global-average-pool model and the layer (the family's CAM
    layer) whose map it pools, or None for a model of another shape (ConvNeXt, MobileNetV3, ViT)."""
    if model not in _POOLED:
        _POOLED[model] = _find_pooled(model)
    return _POOLED[model]


def _find_pooled(model: torch.nn.Module):
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    pooling = getattr(model, "global_pool", None) or getattr(getattr(model, "head", None), "global_pool", None)
    norm = getattr(getattr(model, "head", None), "norm", None)  # ConvNeXt normalises after pooling: not linear
    if not (isinstance(head, torch.nn.Linear) and getattr(pooling, "pool_type", None) in ("avg", "fast")
            and isinstance(norm, (type(None), torch.nn.Identity))):
        return None
    try:
        layer = target_layer_for(model)[0]
    except UnsupportedArchitecture:
        return None
    was_training, size = model.training, getattr(model, "pretrained_cfg", {}).get("input_size", (3, 64, 64))
    try:
        with LayerTap(layer) as tap, torch.no_grad():  # does the head pool that layer?
            model.eval()(torch.zeros(1, *size, device=head.weight.device))
    except Exception:  # noqa: BLE001 - a model that cannot take the probe gets pytorch-grad-cam, as before
        return None
    finally:
        model.train(was_training)
    pooled = tap.output.ndim == 4 and tap.output.shape[1] == head.in_features  # an N x C x H x W map of the head's width
    return (head, layer) if pooled else None


class LayerTap:
    """Keeps the last output of ``module`` (a forward hook), so a loss or a CAM sees the map of the normal
    forward pass (under DDP too). A context manager that removes its hook."""

    def __init__(self, module: torch.nn.Module):
        self.output = None
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.output = output

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


@contextmanager
def _grad_only_from(model: torch.nn.Module, layers: list):
    """Builds the autograd graph from the CAM ``layers`` on only: the CAM needs the gradient at
    their outputs, and back-propagating through the earlier stages would cost more than the
    forward pass itself."""
    keep = {id(p) for layer in layers for p in layer.parameters()}
    if any(next(layer.parameters(), None) is None for layer in layers):  # no weights: the graph must start earlier
        yield
        return
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)

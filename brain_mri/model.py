"""Creating timm models for the four classes, with or without ImageNet weights."""
from __future__ import annotations

import logging

import timm
import torch

from .config import CLASS_NAMES

logger = logging.getLogger(__name__)


class PretrainedUnavailable(RuntimeError):
    """ImageNet weights were required but cannot be downloaded."""


def create_model(arch: str, pretrained: str = "auto", image_size: int | None = None):
    """Creates ``arch`` with a four-class head.

    Args:
        arch: any timm architecture name.
        pretrained: ``"yes"`` (ImageNet weights or fail), ``"no"`` (from scratch) or
            ``"auto"`` (ImageNet weights when the Hub is reachable, else from scratch).
        image_size: input size; passed to models whose input size is fixed (ViT, Swin).

    Returns:
        ``(model, used_pretrained)``.
    """
    if pretrained not in ("auto", "yes", "no"):
        raise ValueError(f"pretrained must be auto, yes or no, got {pretrained!r}")
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:8]
        raise ValueError(
            f"Unknown timm architecture {arch!r}."
            + (f" Similar names: {', '.join(close)}." if close else " See timm.list_models().")
        )
    kwargs = {"num_classes": len(CLASS_NAMES)}
    cfg = timm.get_pretrained_cfg(arch, allow_unregistered=True)
    if image_size and cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = image_size

    use_pretrained = pretrained != "no"
    if use_pretrained:
        from .hub import hub_unreachable_reason

        reason = hub_unreachable_reason()
        if reason is None:
            try:
                return timm.create_model(arch, pretrained=True, **kwargs), True
            except Exception as e:  # network, missing weights for this tag, ...
                reason = f"{type(e).__name__}: {e}"
        if pretrained == "yes":
            raise PretrainedUnavailable(
                f"--pretrained yes: cannot download ImageNet weights for {arch} ({reason}). "
                "Connect to the internet, or use --pretrained auto / no to train from scratch."
            )
        logger.warning("ImageNet weights unavailable (%s): training %s from scratch.", reason, arch)
    return timm.create_model(arch, pretrained=False, **kwargs), False


def model_data_config(model: torch.nn.Module, image_size: int | None = None) -> dict:
    """timm's data config for ``model``, at ``image_size``, resizing without cropping.

    MRI slices are centred and tumours can sit near the edge: crop_pct 1.0 keeps the
    whole field of view.
    """
    from timm.data import resolve_data_config

    args = {"crop_pct": 1.0}
    if image_size:
        args["input_size"] = (3, image_size, image_size)
    return resolve_data_config(args, model=model)


def fold_temperature(model: torch.nn.Module, temperature: float) -> None:
    """Divides the classifier head's weight and bias by ``temperature``, in place.

    Afterwards the model's logits are the calibrated ones, whatever loads it.
    """
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)

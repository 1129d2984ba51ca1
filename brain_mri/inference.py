"""`BrainMRIClassifier`: load an exported folder or Hub repo and predict."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from .config import CLASS_NAMES
from .data import to_pil_rgb


class BrainMRIClassifier:
    """A trained four-class model with its preprocessing.

    Example:
        >>> clf = BrainMRIClassifier.from_pretrained("model")
        >>> clf.predict("scan.jpg")
        {'glioma': 0.01, 'meningioma': 0.02, 'notumor': 0.96, 'pituitary': 0.01}
    """

    def __init__(self, model: torch.nn.Module, data_config: dict | None = None, class_names=CLASS_NAMES, source: str = ""):
        from .data import split_eval_transform
        from .model import model_data_config

        self.model = model.eval()
        self.data_config = data_config or model_data_config(model)
        # timm's eval transform in two halves: explain() needs the resized image in between
        self.geometric, self.tensorize = split_eval_transform(self.data_config)
        self.class_names = tuple(class_names)
        self.source = source
        # CAM hooks sit on the shared model: one request at a time may run it, so two requests
        # never mix activations or gradients (and a plain predict never fires a CAM's hooks).
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, folder_or_repo_id: str | Path, device: str = "cpu") -> "BrainMRIClassifier":
        """Loads an exported model folder or a Hub repo id (safetensors only).

        Raises:
            FileNotFoundError / RuntimeError: with a message naming the alternative.
        """
        import timm
        from timm.data import resolve_data_config

        from .hub import HubError, hub_unreachable_reason

        path = Path(folder_or_repo_id).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} is not a model folder: it has no config.json.")
            name = "local-dir:" + str(path.resolve())
        elif "/" in str(folder_or_repo_id) and not str(folder_or_repo_id).startswith((".", "/")):
            reason = hub_unreachable_reason()
            if reason:
                raise HubError(
                    f"Cannot download {folder_or_repo_id}: {reason}. Pass a local model folder instead "
                    "(for example the bundled ./model)."
                )
            name = "hf-hub:" + str(folder_or_repo_id)
        else:
            raise FileNotFoundError(f"No model folder {folder_or_repo_id!r} (nor a Hub id of the form owner/name).")
        model = timm.create_model(name, pretrained=True)
        labels = model.pretrained_cfg.get("label_names") or CLASS_NAMES
        if tuple(labels) != CLASS_NAMES:
            raise ValueError(f"{folder_or_repo_id} has classes {labels}, expected {CLASS_NAMES}.")
        data_config = resolve_data_config({}, model=model)
        return cls(model.to(device), data_config, labels, source=str(folder_or_repo_id))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def preprocess(self, images) -> torch.Tensor:
        """Images of any kind (see :func:`to_pil_rgb`) -> normalised batch."""
        return torch.stack([self.tensorize(self.geometric(to_pil_rgb(im))) for im in images]).to(self.device)

    def predict_proba(self, images) -> np.ndarray:
        """N x 4 probabilities for a list of images, in one batch."""
        batch = self.preprocess(images)
        with self._lock, torch.inference_mode():
            return torch.softmax(self.model(batch).float(), dim=1).cpu().numpy()

    def predict(self, image_or_list):
        """Class probabilities of one image (a dict) or a list of images (a list of dicts).

        Args:
            image_or_list: a path, PIL image or numpy array (any size; grayscale, RGB,
                RGBA, 16-bit), or a list of them, which is run as one batch.
        """
        single = not isinstance(image_or_list, (list, tuple))
        images = [image_or_list] if single else list(image_or_list)
        if not images:
            return []
        probs = self.predict_proba(images)
        out = [{c: float(p) for c, p in zip(self.class_names, row)} for row in probs]
        return out[0] if single else out

    __call__ = predict

    def explain(self, image, method: str = "gradcam", target: str | None = None, opacity: float = 0.5,
                target_layer: str | None = None):
        """Probabilities and a class activation map from one forward and one backward pass.

        Args:
            image: anything :meth:`predict` takes (one image).
            method: ``gradcam`` (default), ``gradcam++``, ``xgradcam``, ``layercam`` or ``eigencam``.
            target: the class to explain; default the predicted one.
            opacity: weight of the heatmap in the overlay, 0 to 1.
            target_layer: dotted path of the layer to hook, for architectures without a rule.

        Returns:
            An :class:`~brain_mri.explain.Explanation`.
        """
        from .explain import Explanation, compute_cam, make_overlay

        if target is not None and target not in self.class_names:
            raise ValueError(f"Unknown target class {target!r}; choose one of {', '.join(self.class_names)}.")
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
        view_image = self.geometric(to_pil_rgb(image))
        view = np.asarray(view_image, dtype=np.uint8)
        batch = self.tensorize(view_image).unsqueeze(0).to(self.device)
        index = None if target is None else self.class_names.index(target)
        with self._lock:
            logits, heatmap = compute_cam(self.model, batch, method, index, target_layer)
        probs = torch.softmax(logits, dim=1)[0].cpu().numpy()
        explained = int(probs.argmax()) if index is None else index
        return Explanation(
            probabilities={c: float(p) for c, p in zip(self.class_names, probs)},
            target=self.class_names[explained], heatmap=heatmap, image=view,
            overlay=make_overlay(view, heatmap, opacity), method=method,
        )

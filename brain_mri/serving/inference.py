"""`BrainMRIClassifier`: load an exported folder or Hub repo, predict and explain."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ..config import CLASS_NAMES
from ..io.images import to_pil_rgb
from ..transforms import EvalView, Normalize


def configure_threads() -> int:
    """Sets torch's CPU threads for serving: ``$BRAIN_MRI_THREADS``, else half the CPUs this process may
    run on (``os.sched_getaffinity``: a container or ``taskset`` limit, which torch's default ignores).

    Why half: torch's threads spin and wait for each other at every layer, so when a neighbour (a
    training run, another app) takes a core, one request can take 60 times longer; on 2 cores one
    thread stayed flat beside every neighbour (``benchmarks/threads.py``). The other half serves the web
    server, the PNG encoding and the neighbours.

    Returns:
        The thread count set.
    """
    import os

    value = os.environ.get("BRAIN_MRI_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"BRAIN_MRI_THREADS must be a whole number of at least 1, got {value!r}.")
        threads = int(value)
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cpus // 2)
    torch.set_num_threads(threads)
    return threads


class BrainMRIClassifier:
    """A trained four-class model with its preprocessing.

    Example:
        >>> clf = BrainMRIClassifier.from_pretrained("model")
        >>> clf.predict("scan.jpg")
        {'glioma': 0.01, 'meningioma': 0.02, 'notumor': 0.96, 'pituitary': 0.01}
    """

    def __init__(self, model: torch.nn.Module, data_config: dict | None = None, class_names=CLASS_NAMES, source: str = "",
                 ood=None):
        from ..model import model_data_config

        # channels-last convolutions ran about 1.5x faster on one CPU thread, same answers
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.data_config = data_config or model_data_config(model)
        # timm's eval transform in two halves: explain() needs the resized image (and where it lies) in between
        self.view = EvalView(self.data_config)
        self.class_names = tuple(class_names)
        self.source = source
        self.ood = ood  # an OODDetector: flags inputs unlike the training slices
        # the detector's frozen ImageNet stage sees the model's view in grey levels: this normalisation, undone
        self._normalised = Normalize(self.data_config["mean"], self.data_config["std"]).to(self.device)
        from .explain import pooled_layer

        pooled_layer(self.model)  # its one probing forward pass happens now, not in the first request
        # CAM hooks sit on the shared model: one request at a time may run it, so two requests
        # never mix activations or gradients (and a plain predict never fires a CAM's hooks).
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, folder_or_repo_id: str | Path, device: str = "cpu") -> "BrainMRIClassifier":
        """Loads an exported model folder or a Hub repo id (safetensors only).

        Raises:
            FileNotFoundError / HubError / ValueError: with a message naming the alternative.
        """
        from ..model import load_exported
        from .ood import load_detector

        model, data_config = load_exported(folder_or_repo_id, device)
        return cls(model, data_config, source=str(folder_or_repo_id), ood=load_detector(folder_or_repo_id))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def describe(self) -> str:
        """The architecture and the start of the weights' SHA-256: names a model without a path."""
        import hashlib

        if not hasattr(self, "_description"):
            digest = hashlib.sha256()
            for tensor in self.model.state_dict().values():
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            arch = getattr(self.model, "pretrained_cfg", {}).get("architecture") or type(self.model).__name__
            self._description = f"{arch}, weights {digest.hexdigest()[:8]}"
        return self._description

    def display_name(self) -> str:
        """A Hub id as it is; a local folder as "local model (architecture, weights hash)", never its path."""
        return f"local model ({self.describe()})" if Path(self.source).exists() else self.source

    def facts(self) -> dict:
        """What the model's card says of it: architecture, training data, leak-free metrics, link."""
        from ..card import model_facts

        return model_facts(self.source)

    def preprocess(self, images) -> torch.Tensor:
        """Images of any kind (see :func:`~brain_mri.io.images.to_pil_rgb`) -> normalised batch."""
        return self._batch([to_pil_rgb(im) for im in images])

    def _batch(self, rgbs) -> torch.Tensor:
        """RGB PIL images -> the model's normalised batch."""
        batch = torch.stack([self.view.tensorize(self.view(rgb)[0]) for rgb in rgbs]).to(self.device)
        return batch.contiguous(memory_format=torch.channels_last)

    def predict_proba(self, images) -> np.ndarray:
        """N x 4 probabilities for a list of images, in one batch."""
        return self._forward(self.preprocess(images))[0]

    def _forward(self, batch: torch.Tensor, ood: bool = True):
        """(N x 4 probabilities, N distances to the training features or None) in one pass."""
        with self._lock, torch.inference_mode(), self._tap(ood) as tap:
            probs = torch.softmax(self.model(batch).float(), dim=1).cpu().numpy()
            return probs, self._ood_scores(batch, tap) if ood else None

    def _tap(self, ood: bool = True):
        """A :class:`~brain_mri.serving.ood.FeatureTap` when the detector scores the model's own features, else nothing."""
        from contextlib import nullcontext

        from .ood import FeatureTap

        return FeatureTap(self.model, self.ood.layers) if ood and self._own_features else nullcontext()

    @property
    def _own_features(self) -> bool:
        """Whether the detector scores the model's own features (tapped in its forward pass)."""
        return self.ood is not None and self.ood.backbone is None

    def _ood_scores(self, batch: torch.Tensor, tap) -> np.ndarray | None:
        """The detector's distances for a normalised batch: from the tapped features, or from its frozen
        ImageNet stage, which sees the same view in grey levels."""
        if self.ood is None:
            return None
        if self.ood.backbone is None:
            return self.ood.score(tap.features)
        grey = batch * self._normalised.std + self._normalised.mean
        return self.ood.score(self.ood.backbone(grey))

    def assess(self, images) -> list[dict]:
        """Per image: ``probabilities`` (class -> p), ``warning`` (why it is not taken for a brain MRI
        slice, else None: then give no answer) and ``ood_score`` (see :mod:`brain_mri.serving.ood`)."""
        return self._rows(*self._prepare([to_pil_rgb(im) for im in images]))

    def _prepare(self, rgbs, ood: bool = False):
        """``(batch, pixel checks, detector scores)`` of RGB images: all that may run beside the model.
        The scores come here only when ``ood`` and the detector has its own frozen stage: that stage is
        another module, which no CAM hooks, so it needs no lock."""
        from .quality import mri_warning

        batch = self._batch(rgbs)
        scores = None
        if ood and self.ood is not None and not self._own_features:
            with torch.inference_mode():
                scores = self._ood_scores(batch, None)
        return batch, [mri_warning(rgb) for rgb in rgbs], scores

    def _rows(self, batch: torch.Tensor, checks: list, scores=None) -> list[dict]:
        probs, own = self._forward(batch, ood=scores is None)
        scores = own if scores is None else scores
        rows = []
        for i, row in enumerate(probs):
            score = None if scores is None else float(scores[i])
            rows.append({"probabilities": {c: float(p) for c, p in zip(self.class_names, row)},
                         "warning": checks[i] or self._far(score), "ood_score": score})
        return rows

    def assess_volume(self, volume, plane: str = "axial", top: int = 4, method: str = "gradcam",
                      opacity: float = 0.5, batch_size: int = 4, progress=None, target: str | None = None):
        """Scores every slice of a whole scan, then explains the slices with the highest tumour probability.

        Each slice is judged on its own, as a single upload would be, with the not-a-brain-MRI checks;
        CAMs are computed only for the ``top`` slices shown.

        Args:
            volume: a :class:`~brain_mri.io.volumes.Volume`, or what :func:`~brain_mri.io.volumes.read_volume`
                reads: a NIfTI file, a zip of one DICOM series, a multi-frame DICOM file, or a list of
                DICOM files of one series.
            plane: ``axial`` (default), ``coronal`` or ``sagittal``.
            top: how many slices to explain.
            method, opacity, target: as for :meth:`explain` (default: each slice's own top class).
            batch_size: slices per forward pass; small batches keep the activations small (a 155-slice scan:
                4 took 3.4-4.0 s and 95 MB more at peak, 16 took 4.3-4.5 s and 323 MB; one torch thread).
            progress: called with ``(slices done, slices in all)`` after each batch.

        Returns:
            A :class:`~brain_mri.serving.scans.VolumeAssessment`.
        """
        from concurrent.futures import ThreadPoolExecutor

        from ..io.images import DICOM_INFO
        from .quality import header_warning
        from .scans import VolumeAssessment
        from ..io.volumes import Volume, read_volume

        vol = volume if isinstance(volume, Volume) else read_volume(volume)
        n = vol.count(plane)

        def prepare(start):
            rgbs = [to_pil_rgb(vol.slice(i, plane)) for i in range(start, min(start + batch_size, n))]
            for rgb in rgbs:
                rgb.info[DICOM_INFO] = vol.header  # a DICOM scan's modality and body part: the checks read them
            return self._prepare(rgbs, ood=True)

        rows = []
        # the next batch is cut and checked on a second core while the model runs this one
        # (torch's thread count is set per thread in OpenMP: a new thread would take every core; one is its share)
        with ThreadPoolExecutor(1, "slices", torch.set_num_threads, (1,)) as pool:
            pending = pool.submit(prepare, 0)
            for start in range(0, n, batch_size):
                prepared = pending.result()
                if start + batch_size < n:
                    pending = pool.submit(prepare, start + batch_size)
                rows += self._rows(*prepared)
                if progress:
                    progress(len(rows), n)
        said = header_warning({DICOM_INFO: vol.header})  # said once for the scan, not only per slice
        reading = [*vol.reading, *([said] if said else [])]
        assessment = VolumeAssessment(vol.name, vol.kind, plane, rows, reading=reading,
                                      sections=[round(float(v), 4) for v in vol.sections(plane)])
        return self.explain_top(vol, assessment, top, method, opacity, target)

    def explain_top(self, volume, assessment, top: int = 4, method: str = "gradcam", opacity: float = 0.5,
                    target: str | None = None):
        """Fills ``assessment.top`` with the ``top`` answered slices of highest tumour probability, each
        explained (:meth:`explain`: ``target``, default each slice's own top class); returns ``assessment``."""
        from .scans import top_slices

        assessment.top = [(i, self.explain(volume.slice(i, assessment.plane), method, target, opacity))
                          for i in top_slices(assessment.slices, top)]
        return assessment

    def warning(self, rgb, ood_score: float | None) -> str | None:
        """Why an image is not taken for a brain MRI slice: its DICOM header, blank, colour
        (:mod:`~brain_mri.serving.quality`), or features far from the training slices (:mod:`~brain_mri.serving.ood`); ``None`` when
        it is."""
        from .quality import mri_warning

        return mri_warning(rgb) or self._far(ood_score)

    def _far(self, ood_score: float | None) -> str | None:
        from .ood import OOD_WARNING

        return OOD_WARNING if ood_score is not None and ood_score > self.ood.threshold else None

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
        """Probabilities and a class activation map: the default Grad-CAM comes from the prediction's own
        forward pass (:func:`~brain_mri.serving.explain.pooled_gradcam`), other methods and layers add a backward pass.

        Args:
            image: anything :meth:`predict` takes (one image).
            method: ``gradcam`` (default), ``gradcam++``, ``xgradcam``, ``layercam`` or ``eigencam``.
            target: the class to explain; default the predicted one.
            opacity: weight of the heatmap in the overlay, 0 to 1.
            target_layer: dotted path of the layer to hook, or several, comma-separated, whose maps
                are averaged (``"layer3.-1,layer4.-1"``); default the model's own (``config.json`` →
                ``brain_mri.cam_layer``), else the family's rule.

        Returns:
            An :class:`~brain_mri.serving.explain.Explanation`: the heatmap and overlay are aligned with the
            input image at its own size (``view`` is what the model saw); ``warning`` says when the
            image does not look like a brain MRI slice.
        """
        from .explain import Explanation, compute_cam, display_image, heatmap_on_image, make_overlay

        if target is not None and target not in self.class_names:
            raise ValueError(f"Unknown target class {target!r}; choose one of {', '.join(self.class_names)}.")
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
        rgb = to_pil_rgb(image)
        view_image, region = self.view(rgb)
        view = np.asarray(view_image, dtype=np.uint8)
        batch = self.view.tensorize(view_image).unsqueeze(0).to(self.device).contiguous(memory_format=torch.channels_last)
        index = None if target is None else self.class_names.index(target)
        with self._lock, self._tap() as tap:
            logits, heatmap = compute_cam(self.model, batch, method, index, target_layer, self.data_config)
            scores = self._ood_scores(batch, tap)
        score = None if scores is None else float(scores[0])
        probs = torch.softmax(logits, dim=1)[0].cpu().numpy()
        explained = int(probs.argmax()) if index is None else index
        shown = display_image(rgb)
        ratio = shown.shape[1] / rgb.size[0]  # < 1 when a large image is shown scaled down
        on_image = heatmap_on_image(heatmap, [v * ratio for v in region], (shown.shape[1], shown.shape[0]))
        return Explanation(
            probabilities={c: float(p) for c, p in zip(self.class_names, probs)},
            target=self.class_names[explained], heatmap=on_image, image=shown,
            overlay=make_overlay(shown, on_image, opacity), method=method, view=view,
            warning=self.warning(rgb, score), ood_score=score,
        )

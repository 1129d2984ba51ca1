"""Project-wide constants, the training configuration and its defaults, the disclaimer.

Stdlib only: ``train.py --help`` and the app read this module before anything heavy loads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: Class folder names in the classifier's index order.
CLASS_NAMES = ("glioma", "meningioma", "notumor", "pituitary")

#: Human-readable names, same order as :data:`CLASS_NAMES`.
DISPLAY_NAMES = {
    "glioma": "Glioma",
    "meningioma": "Meningioma",
    "notumor": "No tumour",
    "pituitary": "Pituitary tumour",
}

#: CAM methods: id -> (pytorch-grad-cam class name, display name).
CAM_METHODS = {
    "gradcam": ("GradCAM", "Grad-CAM"),
    "gradcam++": ("GradCAMPlusPlus", "Grad-CAM++"),
    "xgradcam": ("XGradCAM", "XGrad-CAM"),
    "layercam": ("LayerCAM", "LayerCAM"),
    "eigencam": ("EigenCAM", "EigenCAM"),
}

#: Kaggle folder names and the ``datasets`` splits they become.
KAGGLE_SPLITS = {"Training": "train", "Testing": "test"}
DATASET_ID = "masoudnickparvar/brain-tumor-mri-dataset"
DATASET_NAME = "Brain Tumor MRI Dataset (Kaggle)"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DICOM_EXTENSIONS = (".dcm", ".dicom")


def true_class(path) -> str | None:
    """The class a file's folder names (Kaggle layout: ``.../glioma/x.jpg``), or its name starts
    with (``glioma_axial.jpg``, as in ``examples/``), else None."""
    from pathlib import PurePath

    path = PurePath(path)
    folder, prefix = path.parent.name.lower(), path.name.split("_")[0].lower()
    return folder if folder in CLASS_NAMES else prefix if prefix in CLASS_NAMES else None

#: Licence of the code, and of the exported weights unless a training source is non-commercial.
LICENSE = "apache-2.0"


def non_commercial(licence: str) -> bool:
    """Whether a source's licence allows non-commercial use only ("CC BY-NC-SA 3.0", "CC BY-NC 4.0", "... (NC)")."""
    return re.search(r"\bNC\b", licence) is not None

#: Near-duplicate test: mean absolute difference of 16x16 grayscale thumbnails, in grey
#: levels (0-255). Read off the nearest-neighbour distance distribution of the Kaggle set:
#: copies (re-encoded, resized) sit below 1.35, distinct slices of one patient start near 1.7.
THUMB_SIZE = 16
NEAR_DUP_THRESHOLD = 1.5

#: ECE bins.
ECE_BINS = 15

DISCLAIMER = (
    "Research and education only. This is not a medical device and must not be used for "
    "diagnosis, treatment or any clinical decision. Its output can be wrong; a qualified "
    "radiologist must read every scan."
)
#: What the external validation found, in one sentence for the page and every whole-scan summary.
OUTSIDE_KAGGLE = ("On scans from other hospitals it is less reliable: it misses some tumours, most often on T1 "
                  "without contrast and on T2, and calls some healthy skull-stripped slices a tumour.")


#: Keys of a data config that timm does not know: ``config.json`` keeps them under ``brain_mri``.
OWN_CONFIG_KEYS = ("head_crop", "cam_layer")


#: Probability of each MRI augmentation step per image (:mod:`~brain_mri.training.mri_augment`); ``--mri-augment`` names a preset.
MRI_AUGMENT_PRESETS = {
    "none": {},
    "mri": {"skull_strip": 0.25, "contrast": 0.5, "invert": 0.15, "gamma": 0.3, "bias": 0.3, "noise": 0.25, "blur": 0.2,
            "ghosting": 0.1, "motion": 0.1, "anisotropy": 0.2, "jpeg": 0.2},
    # scanner artefacts and mild contrast changes only: for runs whose other sources bring real skull-stripped and
    # other-contrast slices (--extra-sources), which the heavy presets imitate
    "mri-light": {"contrast": 0.25, "gamma": 0.3, "bias": 0.3, "noise": 0.2, "blur": 0.2, "anisotropy": 0.1, "jpeg": 0.2},
    # half the slices of every class inverted: T1-like and T2-like become equally likely whatever the label
    "mri-balanced": {"skull_strip": 0.4, "contrast": 0.5, "invert": 0.5, "gamma": 0.3, "bias": 0.3, "noise": 0.25,
                     "blur": 0.2, "ghosting": 0.1, "motion": 0.1, "anisotropy": 0.2, "jpeg": 0.2},
}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. ``train.py`` fills it from its flags, which have the same names;
    the defaults here are the flags' defaults."""

    data: str
    val_fraction: float = 0.15
    keep_leaks: bool = False
    workers: int = 1
    tumour_present: str | None = None  # a folder of slices known only to hold a tumour (the partial-label loss)
    tumour_present_weight: float = 0.5
    tumour_present_batch: int = 12  # such slices beside each batch
    tumour_present_held_out: float = 0.15  # their share held out (near-twins together) to report on
    extra_sources: tuple = ()  # folders with a manifest.csv of other-source volumes and slices (brain_mri.training.sources)
    extra_share: float = 0.3  # share of each epoch drawn from them
    extra_source_weight: tuple = ()  # SOURCE=W: a source's weight among them (default 1 each)
    extra_exclude: tuple = ()  # sources of the manifests left out
    extra_held_out: float = 0.2  # share of each source's subjects held out to report on
    extra_stride: int = 3  # every n-th slice of a volume's plane
    extra_min_head: float = 0.05  # head section a slice must reach (share of the scan's largest)
    extra_tumour_share: float = 0.01  # share of the head a tumour label must cover for a tumour slice
    extra_margin: int = 5  # slices between a tumour label and a "no tumour" slice
    model: str = "resnet18"  # a timm architecture
    pretrained: str = "auto"
    image_size: int = 160
    head_crop: bool = False
    freeze_stem: bool = False  # no gradient for the stem and first stages (brain_mri.model.STEMS)
    channels_last: bool = False  # channels-last convolutions in training (serving always uses them)
    cam_layer: str | None = None  # dotted layer(s) for CAMs; None: the family's rule
    epochs: int = 20
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-3
    layer_decay: float = 0.0  # timm's layer-wise learning-rate decay; 0 = off
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mri_augment: str = "none"  # a preset of brain_mri.training.mri_augment.PRESETS: contrast, scanner and skull augmentations
    patience: int = 6
    model_ema: float = 0.0
    box_loss: float = 0.0
    ood_imagenet: str | None = None  # ARCH:WEIGHTS:STAGE: the not-a-brain-MRI detector on a frozen ImageNet stage
    mixed_precision: str = "auto"
    seed: int = 42
    cpu: bool = False
    output_dir: str
    resume: bool = False
    keep_checkpoints: bool = False
    card_notes: str | None = None
    push_to_hub: str | None = None
    command: str = ""  # the command line, for the model card

    def check(self) -> None:
        """Refuses flags that are wrong on their own: ``train.py`` asks before it imports torch, so they fail at once.

        Raises:
            ValueError: the rule broken.
        """
        if not 0 <= self.extra_share < 1 or not 0 <= self.extra_held_out < 1:
            raise ValueError("--extra-share and --extra-held-out take a share in [0, 1).")
        if self.extra_stride < 1 or self.extra_margin < 0:
            raise ValueError("--extra-stride takes a count >= 1 and --extra-margin one >= 0.")
        self.source_weights()  # a malformed SOURCE=W fails now
        if self.box_loss < 0:
            raise ValueError(f"--box-loss takes a weight >= 0, got {self.box_loss}.")
        if self.box_loss and (self.mixup or self.cutmix):
            raise ValueError("--box-loss cannot be combined with --mixup / --cutmix: "
                             "a mixed image has no one tumour box.")

    def source_weights(self) -> dict:
        """``--extra-source-weight SOURCE=W`` as ``{source: W}``.

        Raises:
            ValueError: an entry without ``=`` or with a weight that is not a number >= 0.
        """
        out = {}
        for entry in self.extra_source_weight:
            name, _, weight = entry.rpartition("=")
            try:
                out[name] = float(weight)
            except ValueError:
                out[name] = -1.0
            if not name or out[name] < 0:
                raise ValueError(f"--extra-source-weight takes SOURCE=WEIGHT (a number >= 0), got {entry!r}.")
        return out

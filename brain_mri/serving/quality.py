"""Checks that an upload looks like a brain MRI slice before its label is trusted."""
from __future__ import annotations

import re

import numpy as np
from PIL import Image

from ..io.images import DICOM_INFO


def mri_warning(image: Image.Image) -> str | None:
    """A plain-language reason when ``image`` is not taken for a brain MRI slice, else ``None``: first what a DICOM
    header says (:func:`header_warning`), then the pixels.

    MRI slices are greyscale with a dark background around a bright head; colour images, blank or
    constant ones are not. The model would still answer one of its four classes: a flagged image
    gets no answer.
    """
    said = header_warning(image.info)
    if said:
        return said
    rgb = np.asarray(image.convert("RGB").resize((128, 128)), dtype=np.float32)
    grey = rgb.mean(axis=-1)
    if rgb.std() < 4:  # over all channels: colour noise averages to a flat grey
        return "This image is blank or nearly constant: there is nothing to classify, so no answer is given."
    colourfulness = np.abs(rgb - grey[..., None]).mean()
    if colourfulness > 12:
        return ("This is a colour image, not a greyscale MRI slice. The model only knows brain MRI, "
                "so no answer is given.")
    dark = (grey < 0.15 * 255).mean()
    if dark < 0.05:
        return ("This image has almost no dark background, unlike a brain MRI slice, so no answer is given.")
    return None


#: DICOM ``Modality`` values of imaging that is not MRI (secondary captures, ``OT`` / ``SC``, may hold an MRI slice).
OTHER_MODALITIES = ("CT", "CR", "DX", "MG", "US", "PT", "NM", "XA", "RF", "IO", "PX", "OP", "OPT", "OCT", "SM", "ES",
                    "XC", "GM", "IVUS", "BMD", "RG")

#: Words of DICOM ``BodyPartExamined`` values that name a part other than the head (the short ones only as whole
#: words), and parts of words that name the head: a value with one of those (``BRAIN SPINE``) names the head too.
OTHER_BODY_PARTS = ("ABDOMEN", "PELVIS", "CHEST", "THORAX", "BREAST", "HEART", "CARDIAC", "LIVER", "KIDNEY",
                    "PROSTATE", "SPINE", "KNEE", "SHOULDER", "HIP", "ANKLE", "FOOT", "HAND", "WRIST", "ELBOW",
                    "EXTREMITY", "ARM", "LEG")
HEAD_PARTS = ("HEAD", "BRAIN", "SKULL", "CRAN", "CEREB", "SELLA", "PITUIT", "ORBIT", "NEURO")


def header_warning(info: dict) -> str | None:
    """A reason when a DICOM header (``info`` of :func:`~brain_mri.io.images.to_pil_rgb`) says the image is not a
    brain MRI: another modality (CT, X-ray, ...) or another body part; else ``None``. Only what the header names
    is believed: a missing or unknown value leaves the judgement to the image."""
    header = info.get(DICOM_INFO)
    if not isinstance(header, dict):
        return None
    modalities = set(re.split(r"[^A-Z]+", str(header.get("modality", ""))))
    other = next((m for m in OTHER_MODALITIES if m in modalities), None)
    if other and "MR" not in modalities:
        return (f"This DICOM file's header names its modality {other}: it is not an MRI. The model only knows brain "
                "MRI, so no answer is given.")
    part = str(header.get("body_part", ""))
    words = set(re.split(r"[^A-Z]+", part))
    elsewhere = any(w in words or (len(w) > 4 and w in part) for w in OTHER_BODY_PARTS)
    if elsewhere and not any(h in part for h in HEAD_PARTS):
        return (f"This DICOM file's header says it shows the {part.lower().replace(chr(92), ', ')}, not the head. The "
                "model only knows brain MRI, so no answer is given.")
    return None

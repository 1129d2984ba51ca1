"""Checks that an upload looks like a brain MRI slice before its label is trusted."""
from __future__ import annotations

import numpy as np
from PIL import Image


def mri_warning(image: Image.Image) -> str | None:
    """A plain-language reason when ``image`` is not taken for a brain MRI slice, else ``None``.

    MRI slices are greyscale with a dark background around a bright head; colour images, blank or
    constant ones are not. The model would still answer one of its four classes: a flagged image
    gets no answer.
    """
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

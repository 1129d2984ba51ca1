"""Checks that an upload looks like a brain MRI slice before its label is trusted."""
from __future__ import annotations

import numpy as np
from PIL import Image


def mri_warning(image: Image.Image) -> str | None:
    """A plain-language warning when ``image`` does not look like a brain MRI slice, else ``None``.

    MRI slices are greyscale with a dark background around a bright head; colour photos,
    blank or constant images are not. The model would still answer one of its four classes.
    """
    rgb = np.asarray(image.convert("RGB").resize((128, 128)), dtype=np.float32)
    grey = rgb.mean(axis=-1)
    if grey.std() < 4:
        return "This image is blank or nearly constant: there is nothing to classify."
    colourfulness = np.abs(rgb - grey[..., None]).mean()
    if colourfulness > 12:
        return ("This looks like a colour image, not a greyscale MRI slice. The model only knows brain MRI: "
                "its answer below means nothing for this image.")
    dark = (grey < 0.15 * 255).mean()
    if dark < 0.05:
        return ("This image has almost no dark background, unlike a brain MRI slice. "
                "Treat the answer below with suspicion.")
    return None

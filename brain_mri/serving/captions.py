"""How a prediction is named beside its true class: the ✔ / ✘ verdict and the one-line caption.

The app's answer, its Gallery tab and ``brain-mri gallery`` all say it this way.
"""
from __future__ import annotations

from ..config import DISPLAY_NAMES


def verdict(truth: str | None, predicted: str, warning: str | None = None) -> str:
    """``" ✔"`` or ``" ✘"`` after a true class; empty without one, or when a flagged image got no answer."""
    if warning or truth is None:
        return ""
    return " ✔" if truth == predicted else " ✘"


def caption(name: str, truth: str | None, probabilities: dict, warning: str | None = None) -> str:
    """``"glioma_axial.jpg: true Glioma ✔ · predicted Glioma 99.2%"``; a flagged image: ``"⚠️ …: no answer"``."""
    predicted = max(probabilities, key=probabilities.get)
    told = "" if truth is None else f"true {DISPLAY_NAMES[truth]}{verdict(truth, predicted, warning)} · "
    if warning:
        return f"⚠️ {name}: {told}no answer"
    return f"{name}: {told}predicted {DISPLAY_NAMES[predicted]} {probabilities[predicted]:.1%}"


def slice_caption(index: int, explanation) -> str:
    """A scan's slice: ``"slice 78: Glioma 97%"`` (its top class), the same in the app, the report and the gallery."""
    e = explanation
    return f"slice {index}: {DISPLAY_NAMES[e.predicted]} {e.probabilities[e.predicted]:.0%}"

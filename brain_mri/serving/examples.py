"""The shareable example slices of ``examples/``: listed by file name, and recognised by content (a page's
example click hands the server a copy), so their true class and link show."""
from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from ..config import DICOM_EXTENSIONS, IMAGE_EXTENSIONS

FOLDER = Path(__file__).resolve().parents[2] / "examples"


def example_files(folder: Path = FOLDER) -> dict:
    """``{name: path}`` of the shareable example slices (images and DICOM), by file name."""
    return {p.name: p for p in sorted(Path(folder).glob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS + DICOM_EXTENSIONS}


def example_inputs(path: Path) -> list:
    """``[image, dicom]``: the input an example file goes into."""
    return [None, str(path)] if path.suffix.lower() in DICOM_EXTENSIONS else [str(path), None]


@cache
def _digests(folder: Path) -> dict:
    return {(p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()): n for n, p in example_files(folder).items()}


def example_name(path, folder: Path = FOLDER) -> str | None:
    """The example ``path`` is a copy of, by size and SHA-256, else None."""
    size = Path(path).stat().st_size
    if not any(size == known for known, _ in _digests(Path(folder))):
        return None
    return _digests(Path(folder)).get((size, hashlib.sha256(Path(path).read_bytes()).hexdigest()))


def example_cards(clf, examples: dict) -> list:
    """One gallery item per example: the slice beside its overlay, captioned with the true and predicted class."""
    import numpy as np

    from .captions import caption
    from ..config import true_class

    cards = []
    for name, path in examples.items():
        e = clf.explain(path)
        cards.append((np.concatenate([e.image, e.overlay], axis=1),
                      caption(name, true_class(name), e.probabilities, e.warning)))
    return cards

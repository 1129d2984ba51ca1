"""brain-mri: brain MRI tumour classification with Grad-CAM explanations."""
from typing import TYPE_CHECKING

from .config import CLASS_NAMES, DISCLAIMER

if TYPE_CHECKING:
    from .serving.inference import BrainMRIClassifier, configure_threads

__all__ = ["BrainMRIClassifier", "CLASS_NAMES", "DISCLAIMER", "configure_threads"]
__version__ = "0.1.0"


def __getattr__(name):
    # torch loads only when the classifier is asked for: `brain_mri.config` stays instant
    # (train.py --help, the app's start-up reads it before anything heavy).
    if name in ("BrainMRIClassifier", "configure_threads"):
        from .serving import inference

        return getattr(inference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""brain-mri: brain MRI tumour classification with Grad-CAM explanations."""
from .config import CLASS_NAMES, DISCLAIMER
from .inference import BrainMRIClassifier

__all__ = ["BrainMRIClassifier", "CLASS_NAMES", "DISCLAIMER"]
__version__ = "0.1.0"

"""Project-wide constants: class names, defaults and the disclaimer."""

#: Class folder names in the classifier's index order.
CLASS_NAMES = ("glioma", "meningioma", "notumor", "pituitary")

#: Human-readable names, same order as :data:`CLASS_NAMES`.
DISPLAY_NAMES = {
    "glioma": "Glioma",
    "meningioma": "Meningioma",
    "notumor": "No tumour",
    "pituitary": "Pituitary tumour",
}

#: Kaggle folder names and the ``datasets`` splits they become.
KAGGLE_SPLITS = {"Training": "train", "Testing": "test"}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

DEFAULT_MODEL = "resnet18"
DEFAULT_IMAGE_SIZE = 160
DEFAULT_SEED = 42
DEFAULT_VAL_FRACTION = 0.15

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

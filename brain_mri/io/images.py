"""Any image input (path, bytes, PIL image, numpy array, DICOM file) -> 8-bit RGB PIL image.

This is all that serving needs to read an upload; it imports neither torch nor the training stack.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..config import DICOM_EXTENSIONS

# Decompression bombs are refused rather than decoded (PIL raises above 2x this).
Image.MAX_IMAGE_PIXELS = 64_000_000


def to_pil_rgb(image) -> Image.Image:
    """Converts a path, bytes, PIL image or numpy array of any mode or bit depth to 8-bit RGB.

    Grayscale and 16-bit / float images are rescaled to 0-255 from their own range;
    alpha is composited onto black (the MRI background).

    Raises:
        ValueError: the input is not an image, with a message that says what was given.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"No such image file: {path.name}")
        if path.suffix.lower() in DICOM_EXTENSIONS or _is_dicom(path):
            header = {}
            image = _array_to_rgb(read_dicom(path, header))
            image.info[DICOM_INFO] = header  # the checks of brain_mri.serving.quality read what the header says
            return image
        return _open_image(path, path.name)
    if isinstance(image, (bytes, bytearray)):
        return _open_image(io.BytesIO(image), "the data")
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return _array_to_rgb(np.asarray(image))
        return image.convert("RGB")
    raise ValueError(
        f"Expected a file path, PIL image or numpy array, got {type(image).__name__}."
    )


def _open_image(fp, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                im.load()
                return to_pil_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(
            f"Cannot read {name}: it is too large to decode safely (a possible decompression bomb; "
            f"the limit is {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels)."
        ) from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"Cannot read {name} as an image: it is no image format we read (JPEG, PNG, TIFF, "
                         "BMP, WebP, GIF, DICOM), or it is damaged.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ValueError(f"Cannot read {name} as an image: it is damaged or truncated "
                         f"({_without_paths(e, fp, name)}).") from None


def _without_paths(error: Exception, fp, name: str) -> str:
    """The decoder's reason, with the file's full path (a server's temporary folder) replaced by its name."""
    text = str(error) or type(error).__name__
    return text.replace(str(fp), name) if isinstance(fp, (str, os.PathLike)) else text


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


#: DICOM header fields kept (upper case) under these keys, in a dict at ``Image.info[DICOM_INFO]``.
DICOM_HEADER = {"Modality": "modality", "BodyPartExamined": "body_part"}
#: A dict there: a PNG's text chunks, which Pillow also puts in ``info``, are strings and cannot pose as a header.
DICOM_INFO = "dicom"


def dicom_header(ds) -> dict:
    """The :data:`DICOM_HEADER` fields a pydicom dataset fills, upper case; several values joined by ``\\``."""
    header = {}
    for tag, key in DICOM_HEADER.items():
        try:
            value = ds.get(tag)
        except Exception:  # a damaged element: pydicom raises many types; the image checks still run
            continue
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        text = value if isinstance(value, str) else "" if value is None else \
            "\\".join(map(str, value)) if hasattr(value, "__iter__") else str(value)
        if text.strip():
            header[key] = text.strip().upper()
    return header


def read_dicom(path, header: dict | None = None) -> np.ndarray:
    """Pixel data of a single-frame DICOM file, with its modality LUT and window applied; ``header``, when
    given, receives the :data:`DICOM_HEADER` fields the file fills.

    Raises:
        ValueError: not a readable single-image DICOM file.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as e:  # optional dependency of the app
        raise ValueError("Reading DICOM needs pydicom: pip install pydicom") from e
    name, ds, decoded = Path(path).name, None, False
    try:
        ds = pydicom.dcmread(path)
        if header is not None:
            header.update(dicom_header(ds))
        _check_declared_size(ds, name)  # before any pixel is decoded
        arr, decoded = ds.pixel_array, True
        if getattr(ds, "PhotometricInterpretation", "MONOCHROME2").startswith("MONOCHROME"):
            arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)  # window centre / width when present
            if ds.PhotometricInterpretation == "MONOCHROME1":
                arr = arr.max() - arr
    except _Refused:
        raise
    except Exception as e:  # pydicom raises many types for broken files
        reason = (None if decoded else decode_reason(ds, e)) or _without_paths(e, path, name)
        raise ValueError(f"Cannot read {name} as DICOM: {reason}") from None
    return np.asarray(arr)


def decode_reason(ds, error: Exception) -> str | None:
    """One line on why the pixels of ``ds`` did not decode when their transfer syntax is compressed, private
    or unknown, naming it (never pydicom's list of missing plugins); None for an uncompressed syntax."""
    text = str(error) or type(error).__name__
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return None
    if not syntax.is_transfer_syntax:  # a vendor's private syntax, or no transfer syntax at all
        return (f"its pixels use the transfer syntax {syntax}, which is private or unknown and which this "
                "server cannot decode; export the images uncompressed.")
    if not syntax.is_compressed:
        return None
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # pydicom has no decoder at all for it (MPEG, HEVC video)
        available = False
    if not available:
        return (f"its pixels are compressed as {syntax.name}, which this server cannot decode; "
                "export the images uncompressed or as JPEG Lossless.")
    # "Unable to decode as exceptions were raised by all available plugins:\n  gdcm: <why>": keep the why
    reasons = [line.split(": ", 1)[-1].strip() for line in text.splitlines()[1:] if line.strip()]
    return f"its {syntax.name} pixels could not be decoded ({reasons[0] if reasons else text.splitlines()[0]})."


class _Refused(ValueError):
    """A readable DICOM file that is refused (its message is complete)."""


def _check_declared_size(ds, name: str) -> None:
    """Refuses multi-frame files and pixel data larger than PIL's bomb limit, from the header alone."""
    frames = int(getattr(ds, "NumberOfFrames", None) or 1)
    if frames > 1:
        raise _Refused(f"{name} holds {frames} frames: it is a whole scan, read as one by assess_volume (and the app).")
    if "PixelData" not in ds:
        raise _Refused(f"Cannot read {name} as DICOM: it holds no image (no pixel data).")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if rows * cols * int(getattr(ds, "SamplesPerPixel", 1) or 1) > Image.MAX_IMAGE_PIXELS:
        raise _Refused(f"{name} declares {cols} x {rows} pixels: too large to decode safely "
                         f"(the limit is {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels).")


def _array_to_rgb(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(
            f"Expected an image array of shape HxW, HxWx3 or HxWx4, got {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError("The image is empty.")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float64) / (65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0)
        arr = arr[..., :3] * alpha
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("The image holds NaN or infinite values.")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    return image.convert("RGB")

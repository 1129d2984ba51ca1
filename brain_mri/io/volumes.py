"""Whole scans -> stacks of 2-D slices: NIfTI (nibabel), DICOM series (a zip or several files) and
multi-frame DICOM (pydicom), reoriented to RAS+ and cut along one plane with square pixels.

Every declared size is checked from the headers before any pixel is decoded. Serving code: no torch.
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dicom_series import MAX_VOXELS, check_voxels
from ..config import DICOM_EXTENSIONS
from .images import _is_dicom, _without_paths

PLANES = ("axial", "coronal", "sagittal")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".zip")
MAX_SERIES_BYTES = 256_000_000  # a series' files, unpacked: 4000 slices of 256 x 256 at 16 bits
MAX_SERIES_FILES = 4000
MAX_ZIP_RATIO = 200  # an archive (or a member) unpacking to more than this times its packed size is a bomb


def is_volume(path) -> bool:
    """A NIfTI file, a zip, a folder (one DICOM series) or a multi-frame DICOM file (read from its header only)."""
    path = Path(path)
    if path.is_dir() or path.name.lower().endswith(VOLUME_SUFFIXES):
        return True
    if not path.is_file() or not (path.suffix.lower() in DICOM_EXTENSIONS or _is_dicom(path)):
        return False  # an image: no DICOM reader needed to say so
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(getattr(ds, "NumberOfFrames", None) or 1) > 1
    except Exception:  # not DICOM (or unreadable): the single-image reader says why
        return False


@dataclass
class Volume:
    """A 3-D scan in RAS+ voxel order (nibabel's canonical orientation).

    Attributes:
        data: float32 voxels, shape (X, Y, Z), axes pointing Right, Anterior, Superior.
        spacing: voxel size in mm along X, Y, Z.
        window: (low, high) intensities mapped to black and white.
        name: the file's (or the series') name, never a folder.
        kind: "NIfTI", "DICOM series of N files" or "multi-frame DICOM".
        reading: plain sentences on how it was read: the window, and the slice order when not from positions.
        header: a DICOM scan's modality and body part (:func:`~brain_mri.io.images.dicom_header`); each slice's
            checks read it.
    """

    data: np.ndarray
    spacing: tuple
    window: tuple
    name: str
    kind: str
    reading: list = field(default_factory=list)
    header: dict = field(default_factory=dict)

    def count(self, plane: str = "axial") -> int:
        """How many slices ``plane`` has."""
        return self.data.shape[_axis(plane)]

    def slice(self, index: int, plane: str = "axial") -> np.ndarray:
        """Slice ``index`` of ``plane`` as 8-bit grey, square pixels, shown as radiologists do: the
        patient's right on the left; anterior up (axial) or superior up (coronal, sagittal; the face left)."""
        from PIL import Image

        axis = _axis(plane)
        if not -self.count(plane) <= index < self.count(plane):
            raise IndexError(f"{plane} slice {index} is outside the scan's {self.count(plane)} slices.")
        cut = self.data[(slice(None),) * axis + (index,)]  # a view (np.take copies, 50x slower)
        # cut's axes are the two remaining RAS+ axes; flip both, then rows become the second one
        image = cut[::-1, ::-1].T
        low, high = self.window
        grey = np.clip((image - low) * (255.0 / max(high - low, 1e-6)), 0, 255).astype(np.uint8)
        cols_mm, rows_mm = [s for k, s in enumerate(self.spacing) if k != axis]
        pixel = min(cols_mm, rows_mm)
        size = (max(1, round(grey.shape[1] * cols_mm / pixel)), max(1, round(grey.shape[0] * rows_mm / pixel)))
        if size == (grey.shape[1], grey.shape[0]):
            return grey
        return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR))

    def sections(self, plane: str = "axial", step: int = 4) -> np.ndarray:
        """Each slice's head section as a share of the scan's largest: the area brighter than 20/255 of the
        window, holes filled (dark CSF inside the skull counts), measured at 1/``step`` of the resolution."""
        from scipy import ndimage

        axis = _axis(plane)
        low, high = self.window
        step = max(1, min(step, min(n for k, n in enumerate(self.data.shape) if k != axis) // 32))
        coarse = self.data[tuple(slice(None) if k == axis else slice(None, None, step) for k in range(3))]
        within = np.ones((3, 3, 3), bool)  # connectivity inside each slice only
        within[tuple(slice(None) if k != axis else [0, 2] for k in range(3))] = False
        head = ndimage.binary_fill_holes(coarse > low + (high - low) * 20 / 255, structure=within)
        area = head.sum(axis=tuple(k for k in range(3) if k != axis)).astype(float)
        return area / max(area.max(), 1.0)


def _axis(plane: str) -> int:
    if plane not in PLANES:
        raise ValueError(f"Unknown plane {plane!r}; choose one of {', '.join(PLANES)}.")
    return {"sagittal": 0, "coronal": 1, "axial": 2}[plane]


def read_volume(source) -> Volume:
    """Reads a NIfTI file (``.nii``, ``.nii.gz``), a zip of one DICOM series, a multi-frame DICOM file,
    a folder or a list of DICOM files of one series (sorted along the slice normal, never by file name).

    Raises:
        ValueError: one line saying why the scan is refused (4-D, mixed series, too large, a zip bomb,
            paths escaping the archive, unreadable), naming files without their folders.
    """
    if isinstance(source, (list, tuple)):
        if len(source) == 1:
            return read_volume(source[0])
        name = f"{len(source)} DICOM files"
        _check_series([Path(p).stat().st_size if Path(p).is_file() else 0 for p in source], name)
        return _series([(Path(p).name, _file_bytes(p)) for p in source], name)
    path = Path(source)
    if path.is_dir():  # a folder of one series, named after it
        volume = read_volume(sorted(f for f in path.rglob("*") if f.is_file()) or _empty(path))
        volume.name = path.name
        return volume
    if not path.is_file():
        raise ValueError(f"No such file: {path.name}")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _nifti(path)
    if name.endswith(".zip") or zipfile.is_zipfile(path):
        return _series(_zip_members(path), path.name)
    return _series([(path.name, _file_bytes(path))], path.name)


def _empty(folder: Path):
    raise ValueError(f"{folder.name} holds no file.")


def _file_bytes(path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No such file: {path.name}")
    if path.stat().st_size > MAX_VOXELS * 4:
        raise ValueError(f"{path.name} is larger than the {MAX_VOXELS * 4 // 1_000_000} MB a scan may have.")
    return path.read_bytes()


def _check_series(sizes: list, name: str) -> None:
    """Refuses a series of too many files, or too many bytes in all (unpacked)."""
    if len(sizes) > MAX_SERIES_FILES:
        raise ValueError(f"{name} holds {len(sizes)} files: more than the {MAX_SERIES_FILES} a series may have.")
    if sum(sizes) > MAX_SERIES_BYTES:
        raise ValueError(f"{name} unpacks to {sum(sizes) // 1_000_000} MB: more than the "
                         f"{MAX_SERIES_BYTES // 1_000_000} MB a series may have.")


def _nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.header.get_data_shape())
    except Exception as e:  # nibabel raises many types for broken files
        raise ValueError(f"Cannot read {path.name} as NIfTI: {_without_paths(e, path, path.name)}") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ValueError(f"{path.name} is {len(shape)}-D ({' x '.join(map(str, shape))}): it holds "
                         f"{int(np.prod(shape[3:]))} volumes; upload a single 3-D volume.")
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"{path.name} holds no image (shape {shape}).")
    check_voxels(shape, path.name)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape + (1,) * (3 - len(shape)))
        img = nib.Nifti1Image(data, img.affine)
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:
        raise ValueError(f"Cannot read {path.name} as NIfTI: {_without_paths(e, path, path.name)}") from None
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return Volume(data, spacing, _robust_window(data), path.name, "NIfTI", [ROBUST + "."])


ROBUST = "Window: the scan's own 0.5th to 99.5th intensity percentiles"


def _choose_window(data: np.ndarray, windows: list) -> tuple:
    """``(window, sentence)``: the DICOM window every file names, when it neither clips most of the head nor
    squeezes it into a few grey levels; else the scan's robust window (scanners often write an automatic
    window per file, and exporters a full-range one)."""
    robust = _robust_window(data)
    if windows == [None]:
        return robust, ROBUST + " (the files name no window)."
    if len(windows) > 1:
        named = [w for w in windows if w is not None]
        return robust, ROBUST + (", because not every file names a window." if None in windows else
                                 f", because its files name {len(named)} different windows.")
    low, high = windows[0]
    sample = data.ravel()[:: max(1, data.size // 2_000_000)]
    head = sample[sample > robust[0] + 0.1 * (robust[1] - robust[0])]
    if head.size and np.mean((head > high) | (head < low)) > 0.5:
        return robust, ROBUST + ", because the files' DICOM window would clip most of the head."
    if head.size and np.ptp(np.percentile(head, (1, 99))) < 0.1 * (high - low):
        return robust, ROBUST + ", because the files' DICOM window would squeeze the head into a few grey levels."
    return (low, high), f"Window: the files' DICOM window (centre {(low + high) / 2:g}, width {high - low:g})."


def _robust_window(data: np.ndarray) -> tuple:
    """(0.5th, 99.5th percentile) of the volume: one window for all slices, so empty slices stay dark."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise ValueError("The scan holds no finite value.")
    sample = finite[:: max(1, finite.size // 2_000_000)]
    low, high = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
    return (low, high) if high > low else (float(finite.min()), float(finite.max()))


def _zip_members(path: Path) -> list:
    """``(name, bytes)`` of every file in the zip, after the archive's declared sizes and names pass."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"Cannot read {path.name} as a zip archive: {_without_paths(e, path, path.name)}") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        _check_series([i.file_size for i in infos], path.name)
        unpacked, packed = sum(i.file_size for i in infos), sum(i.compress_size for i in infos)
        if unpacked > 1_000_000 and unpacked > MAX_ZIP_RATIO * max(packed, 1):
            raise ValueError(f"{path.name} is refused: it unpacks to {unpacked // max(packed, 1)} times its size "
                             "(a zip bomb?).")
        for info in infos:
            parts = info.filename.replace("\\", "/").split("/")
            if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                raise ValueError(f"{path.name} is refused: it holds a path that escapes the archive ({info.filename!r}).")
            if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1) and info.file_size > 1_000_000:
                raise ValueError(f"{path.name} is refused: {Path(info.filename).name} unpacks to "
                                 f"{info.file_size // max(info.compress_size, 1)} times its size (a zip bomb?).")
        try:
            return [(Path(i.filename).name, _read_member(archive, i)) for i in infos]
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as e:
            raise ValueError(f"Cannot unpack {path.name}: it is damaged ({e}).") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, never more than it declares (a forged header cannot unpack more)."""
    with archive.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise ValueError(f"{Path(info.filename).name} unpacks to more than its archive declares (a zip bomb?).")
    return data


def _series(members: list, name: str) -> Volume:
    from .dicom_series import series_volume

    data, spacing, windows, kind, notes, header = series_volume(members, name)
    window, sentence = _choose_window(data, windows)
    return Volume(data, spacing, window, name, kind, [sentence, *notes], header)

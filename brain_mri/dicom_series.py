"""One DICOM series (several single-frame files, or one multi-frame file) -> a RAS+ volume.

Slices are ordered by their position along the slice normal (then InstanceNumber), never by file
name; sizes, series and positions are checked from the headers before any pixel is decoded.
"""
from __future__ import annotations

import io

import numpy as np


def series_volume(members: list, name: str):
    """``(data, spacing, window, kind)`` of the series in ``members`` (``(file name, bytes)`` pairs).

    ``data`` is float32 in RAS+ order, ``window`` the DICOM window as (low, high) or None.

    Raises:
        ValueError: no DICOM image, mixed series, a 4-D series, too many voxels, undecodable pixels.
    """
    from .volumes import _check_voxels

    datasets = _headers(members)
    if not datasets:
        raise ValueError(f"{name} holds no DICOM image.")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise ValueError(f"{name} mixes {len(series)} DICOM series; upload one series at a time.")
    frames = [_frames(ds) for _, ds in datasets]
    if max(frames) > 1 and len(datasets) > 1:
        raise ValueError(f"{name} holds several multi-frame files; upload one volume at a time.")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in datasets}
    if len(sizes) > 1:
        raise ValueError(f"{name} mixes images of different sizes ({len(sizes)} sizes); upload one series.")
    rows, cols = sizes.pop()
    _check_voxels((cols, rows, sum(frames)), name)
    first = datasets[0][1]
    orientation = _orientation(first)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = _positions(datasets, frames[0] if len(datasets) == 1 else 0)
    order, along = _order(datasets, positions, normal, frames[0] if len(datasets) == 1 else 0, name)
    stack = _pixels(datasets, name)[order]  # (slices, rows, columns)
    spacing = _spacing(first, along)
    affine = _affine(orientation, normal, spacing, positions[order[0]] if positions[0] is not None else None)
    data, zooms = _canonical(stack.transpose(2, 1, 0), affine)
    window = _window(first)
    if getattr(first, "PhotometricInterpretation", "") == "MONOCHROME1":  # white is low: turn it round
        data = -data
        window = None if window is None else (-window[1], -window[0])
    kind = "multi-frame DICOM" if len(datasets) == 1 and frames[0] > 1 else f"DICOM series of {len(datasets)} files"
    return data, zooms, window, kind


def _headers(members: list) -> list:
    """``(file name, dataset)`` of each member that is a DICOM image; other files (DICOMDIR, notes) are passed over."""
    import pydicom

    found = []
    for file_name, data in members:
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception:  # not DICOM
            continue
        if "PixelData" in ds and getattr(ds, "Rows", None) and getattr(ds, "Columns", None):
            found.append((file_name, ds))
    return found


def _frames(ds) -> int:
    return int(getattr(ds, "NumberOfFrames", None) or 1)


def _shared(ds, sequence: str, keyword: str):
    """``keyword`` at the top level, else in the first item of ``sequence`` of the shared (enhanced) groups."""
    if keyword in ds:
        return ds.get(keyword)
    for group in ds.get("SharedFunctionalGroupsSequence", []) or []:
        for item in group.get(sequence, []) or []:
            if keyword in item:
                return item.get(keyword)
    return None


def _orientation(ds) -> np.ndarray:
    iop = _shared(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    values = np.array([float(v) for v in iop], dtype=np.float64) if iop is not None and len(iop) == 6 else None
    if values is None or not np.isfinite(values).all() or np.linalg.norm(np.cross(values[:3], values[3:])) < 0.5:
        return np.array([1.0, 0, 0, 0, 1, 0])  # no usable orientation: axial, as a plain stack
    return values


def _positions(datasets: list, frames: int) -> list:
    """ImagePositionPatient of each file, or of each frame of a multi-frame file (None when absent)."""
    def position(item):
        ipp = item.get("ImagePositionPatient") if item is not None else None
        return np.array([float(v) for v in ipp]) if ipp is not None and len(ipp) == 3 else None

    if frames > 1:
        ds = datasets[0][1]
        per_frame = ds.get("PerFrameFunctionalGroupsSequence", []) or []
        found = [position((g.get("PlanePositionSequence") or [None])[0]) for g in per_frame[:frames]]
        return found if len(found) == frames and all(p is not None for p in found) else [None] * frames
    found = [position(ds) for _, ds in datasets]
    return found if all(p is not None for p in found) else [None] * len(found)


def _order(datasets: list, positions: list, normal: np.ndarray, frames: int, name: str):
    """Slice order (by position along the normal, then InstanceNumber) and the sorted positions along it."""
    count = frames or len(datasets)
    instance = [0] * count if frames else [int(getattr(ds, "InstanceNumber", 0) or 0) for _, ds in datasets]
    along = [float(p @ normal) if p is not None else 0.0 for p in positions]
    order = np.array(sorted(range(count), key=lambda k: (along[k], instance[k])))
    if positions[0] is not None:
        distinct = len({round(a, 3) for a in along})
        if distinct < count:
            raise ValueError(f"{name} holds {count} images at {distinct} positions (a 4-D or multi-echo series); "
                             "upload a single volume.")
    return order, [along[k] for k in order]


def _pixels(datasets: list, name: str) -> np.ndarray:
    """(images, rows, columns) float32, with each file's modality LUT (rescale slope and intercept)."""
    from pydicom.pixels import apply_modality_lut

    images = []
    for file_name, ds in datasets:
        try:
            arr = ds.pixel_array
            if getattr(ds, "SamplesPerPixel", 1) != 1 or arr.ndim not in (2, 3):
                raise ValueError("colour images are not MRI")
            arr = apply_modality_lut(arr, ds) if "RescaleSlope" in ds or "ModalityLUTSequence" in ds else arr
        except Exception as e:  # pydicom raises many types for broken pixel data
            raise ValueError(f"Cannot read {file_name} in {name} as DICOM: {e}") from None
        images.append(np.asarray(arr, dtype=np.float32).reshape(-1, *arr.shape[-2:]))
    return np.concatenate(images)


def _spacing(ds, along: list) -> tuple:
    """(row, column, slice) spacing in mm; between slices, measured from the positions when there are any."""
    pixel = _shared(ds, "PixelMeasuresSequence", "PixelSpacing")
    row, col = (float(pixel[0]), float(pixel[1])) if pixel is not None and len(pixel) == 2 else (1.0, 1.0)
    steps = np.diff(along)
    if len(steps) and np.median(steps) > 0:
        between = float(np.median(steps))
    else:
        declared = _shared(ds, "PixelMeasuresSequence", "SpacingBetweenSlices") or \
            _shared(ds, "PixelMeasuresSequence", "SliceThickness")
        between = float(declared) if declared else 1.0
    good = [v if np.isfinite(v) and v > 0 else 1.0 for v in (row, col, between)]
    return tuple(good)


def _affine(orientation: np.ndarray, normal: np.ndarray, spacing: tuple, origin) -> np.ndarray:
    """Voxel (column, row, slice) -> RAS+ mm; DICOM's patient axes are LPS+."""
    row_mm, col_mm, between = spacing
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * col_mm  # along a row: the column index grows
    affine[:3, 1] = orientation[3:] * row_mm
    affine[:3, 2] = normal * between
    affine[:3, 3] = origin if origin is not None else 0.0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def _canonical(data: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.Nifti1Image(np.ascontiguousarray(data), affine))
    return np.asarray(img.dataobj, dtype=np.float32), tuple(float(z) for z in img.header.get_zooms()[:3])


def _window(ds):
    """The DICOM window (first one) as (low, high), or None."""
    centre = _shared(ds, "FrameVOILUTSequence", "WindowCenter")
    width = _shared(ds, "FrameVOILUTSequence", "WindowWidth")
    try:
        centre, width = (float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
                         for v in (centre, width))
    except (TypeError, ValueError, IndexError):
        return None
    return (centre - width / 2, centre + width / 2) if width > 0 else None

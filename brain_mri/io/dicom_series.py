"""One DICOM series (several single-frame files, or one multi-frame file) -> a RAS+ volume.

Slices are ordered by their position along the slice normal (then InstanceNumber), never by file
name; a series whose files all give one position is ordered by SliceLocation, else InstanceNumber, unless
something marks echoes or time points. Sizes, series and positions are checked from the headers before
any pixel is decoded; compressed pixels go through pydicom's decoders (GDCM for the JPEG family).
"""
from __future__ import annotations

import io

import numpy as np

from .images import dicom_header

#: The largest scan read: 48 million voxels (e.g. 512 x 512 x 183) are 192 MB as float32.
MAX_VOXELS = 48_000_000


def check_voxels(shape, name: str) -> None:
    """Refuses a scan whose declared shape holds more than :data:`MAX_VOXELS`."""
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise ValueError(f"{name} declares {' x '.join(map(str, shape))} voxels: more than the "
                         f"{MAX_VOXELS // 1_000_000} million a scan may have.")


def series_volume(members: list, name: str):
    """``(data, spacing, windows, kind, notes, header)`` of the series in ``members`` (``(file name, bytes)`` pairs).

    ``data`` is float32 in RAS+ order; ``windows`` the distinct DICOM windows of its files as (low, high),
    None for files that name none; ``notes`` plain sentences on how it was read, when not as usual; ``header``
    what its first file says of modality and body part (:func:`~brain_mri.io.images.dicom_header`).

    Raises:
        ValueError: no DICOM image, mixed series, a 4-D series, too many voxels, undecodable pixels.
    """
    datasets = _headers(members)
    if not datasets:
        raise ValueError(f"{name} holds no DICOM image.")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise ValueError(f"{name} mixes {len(series)} DICOM series; upload one series at a time.")
    frames = [_frames(ds) for _, ds in datasets]
    if min(frames) < 1:
        raise ValueError(f"{name} declares a DICOM file of {min(frames)} frames.")
    if max(frames) > 1 and len(datasets) > 1:
        raise ValueError(f"{name} holds several multi-frame files; upload one volume at a time.")
    sizes = {(_number(ds.Rows), _number(ds.Columns)) for _, ds in datasets}
    if any(r is None or c is None or r < 1 or c < 1 for r, c in sizes):
        raise ValueError(f"{name} declares a DICOM image without a valid size.")
    if len(sizes) > 1:
        raise ValueError(f"{name} mixes images of different sizes ({len(sizes)} sizes); upload one series.")
    rows, cols = sizes.pop()
    check_voxels((int(cols), int(rows), sum(frames)), name)
    first = datasets[0][1]
    if len({tuple(np.round(_orientation(ds), 3)) for _, ds in datasets}) > 1:
        raise ValueError(f"{name} mixes slices of different orientations (a localizer?); upload one series.")
    orientation = _orientation(first)
    normal = np.cross(orientation[:3], orientation[3:])
    multi = frames[0] if len(datasets) == 1 else 0  # the frames of one file, else 0: one image per file
    positions = _positions(datasets, multi)
    order, along, notes = _order(datasets, positions, normal, multi, name)
    stack = _pixels(members, datasets, name)[order]  # (slices, rows, columns)
    spacing = _spacing(first, along)
    affine = _affine(orientation, normal, spacing, positions[order[0]] if positions[0] is not None else None)
    data, zooms = _canonical(stack.transpose(2, 1, 0), affine)
    windows = list({_window(ds) for _, ds in datasets})  # None for a file that names no window
    if getattr(first, "PhotometricInterpretation", "") == "MONOCHROME1":  # white is low: turn it round
        data = -data
        windows = [w and (-w[1], -w[0]) for w in windows]
        notes = [*notes, "Grey levels turned round: the files are MONOCHROME1 (white is low)."]
    kind = ("multi-frame DICOM" if multi > 1 else
            f"DICOM series of {len(datasets)} file{'s' * (len(datasets) != 1)}")
    return data, zooms, windows, kind, notes, dicom_header(first)


def _headers(members: list) -> list:
    """``(index in members, dataset with its pixels unread)`` of each member that is a DICOM image; other files
    (DICOMDIR, notes) are passed over. Pixels are read later, one file at a time, once the sizes pass."""
    import pydicom

    found = []
    for k, (_, data) in enumerate(members):
        try:
            ds = pydicom.dcmread(io.BytesIO(data), defer_size=1024)  # large values stay unread
        except Exception:  # noqa: S112 - not DICOM: passed over, as a DICOMDIR or a notes file is
            continue
        if "PixelData" in ds and "Rows" in ds and "Columns" in ds:
            found.append((k, ds))
    return found


def _number(value, count: int = 1):
    """``value`` (a DICOM number or ``count`` of them) as finite floats, or None when it is missing or malformed."""
    try:
        values = [float(v) for v in (value if count > 1 else [value])]
    except (TypeError, ValueError):
        return None
    if len(values) != count or not all(np.isfinite(values)):
        return None
    return values if count > 1 else values[0]


def _frames(ds) -> int:
    frames = _number(ds.get("NumberOfFrames", 1) or 1)
    return int(frames) if frames is not None else 0


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
    """The row and column directions (unit vectors), from the file, its shared groups or its first frame."""
    iop = _shared(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    if iop is None:  # enhanced MR often keeps it per frame
        for group in (ds.get("PerFrameFunctionalGroupsSequence") or [])[:1]:
            for item in group.get("PlaneOrientationSequence", []) or []:
                iop = item.get("ImageOrientationPatient")
    values = _number(iop, 6) if iop is not None else None
    if values is None or np.linalg.norm(np.cross(values[:3], values[3:])) < 0.5:
        return np.array([1.0, 0, 0, 0, 1, 0])  # no usable orientation: axial, as a plain stack
    row, col = np.array(values[:3]), np.array(values[3:])
    return np.concatenate([row / np.linalg.norm(row), col / np.linalg.norm(col)])


def _positions(datasets: list, frames: int) -> list:
    """ImagePositionPatient of each file, or of each frame of a multi-frame file (None when absent)."""
    def position(item):
        values = _number(item.get("ImagePositionPatient"), 3) if item is not None else None
        return None if values is None else np.array(values)

    if frames > 1:
        ds = datasets[0][1]
        per_frame = ds.get("PerFrameFunctionalGroupsSequence", []) or []
        found = [position((g.get("PlanePositionSequence") or [None])[0]) for g in per_frame[:frames]]
        return found if len(found) == frames and all(p is not None for p in found) else [None] * frames
    found = [position(ds) for _, ds in datasets]
    return found if all(p is not None for p in found) else [None] * len(found)


def _order(datasets: list, positions: list, normal: np.ndarray, frames: int, name: str):
    """Slice order, the slices' places along the normal in mm (None when unknown) and a note on how the
    order was found when not from positions: by position along the normal (then InstanceNumber); when
    the files give no position or all the same one, by distinct SliceLocations, else by InstanceNumber."""
    count = frames or len(datasets)
    instance = [0] * count if frames else [_number(ds.get("InstanceNumber")) for _, ds in datasets]
    along = [float(p @ normal) if p is not None else 0.0 for p in positions]
    distinct = len({round(a, 3) for a in along}) if positions[0] is not None else 0
    if distinct == count or count == 1 or (frames and not distinct):  # no positions in a file: frames as stored
        order = np.array(sorted(range(count), key=lambda k: (along[k], instance[k] or 0)))
        return order, [along[k] for k in order], []
    if distinct > 1 or frames:
        raise ValueError(f"{name} holds {count} images at {distinct} positions (a 4-D or multi-echo series); "
                         "upload a single volume.")
    why = "every file gives the same position" if distinct == 1 else "not every file gives a position"
    _refuse_differing(datasets, ECHO_TAGS, name)  # several contrasts are never one volume
    locations = [_number(ds.get("SliceLocation")) for _, ds in datasets]
    if None not in locations:  # distinct locations tell the images apart; equal ones say they lie at one place
        if len({round(v, 3) for v in locations}) < count:
            raise ValueError(f"{name} holds {count} images at {len({round(v, 3) for v in locations})} slice "
                             "locations (a 4-D or multi-echo series); upload a single volume.")
        order = np.argsort(locations, kind="stable")
        return order, [locations[k] for k in order], [f"Slice order from slice locations ({why}): which end is "
                                                      "which follows them."]
    _refuse_differing(datasets, TIME_TAGS, name)  # with nothing else to tell them apart, these are time points
    if None not in instance and len(set(instance)) == count:
        return np.argsort(instance, kind="stable"), None, [f"Slice order from instance numbers ({why})."]
    raise ValueError(f"The slice order of {name} is unknown: its {count} files share one position and have no "
                     "distinct slice locations or instance numbers.")


#: Tags whose values differ between the images of one position in a multi-echo or multi-contrast series.
ECHO_TAGS = ("EchoTime", "EchoNumbers", "InversionTime", "DiffusionBValue", "DiffusionGradientOrientation")
#: Tags whose values differ between the time points of a 4-D series.
TIME_TAGS = ("AcquisitionTime", "TemporalPositionIdentifier", "TriggerTime")


def _refuse_differing(datasets: list, tags: tuple, name: str) -> None:
    """Refuses a series without usable positions whose files differ in one of ``tags`` (a 4-D series)."""
    for tag in tags:
        values = {str(ds.get(tag, "")).strip() for _, ds in datasets}
        if len(values) > 1:
            raise ValueError(f"{name} holds {len(datasets)} images at one position with {len(values)} different "
                             f"{tag} values (a 4-D or multi-echo series); upload a single volume.")


def _pixels(members: list, datasets: list, name: str) -> np.ndarray:
    """(images, rows, columns) float32, with each file's modality LUT (rescale slope and intercept);
    files are decoded one at a time."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from .images import decode_reason

    images = []
    for k, header in datasets:
        where = f"Cannot read {members[k][0]} in {name} as DICOM"
        try:
            ds = pydicom.dcmread(io.BytesIO(members[k][1]))
            arr = ds.pixel_array
        except Exception as e:  # pydicom raises many types for broken or undecodable pixel data
            raise ValueError(f"{where}: {decode_reason(header, e) or _first_line(e)}") from None
        if _number(header.get("SamplesPerPixel", 1)) != 1 or arr.ndim not in (2, 3):
            raise ValueError(f"{where}: colour images are not MRI.")
        try:
            arr = apply_modality_lut(arr, ds) if "RescaleSlope" in ds or "ModalityLUTSequence" in ds else arr
        except Exception as e:  # a malformed modality LUT
            raise ValueError(f"{where}: {_first_line(e)}") from None
        images.append(np.asarray(arr, dtype=np.float32).reshape(-1, *arr.shape[-2:]))
    return np.concatenate(images)


def _first_line(error: Exception) -> str:
    return (str(error) or type(error).__name__).splitlines()[0]


def _spacing(ds, along: list | None) -> tuple:
    """(row, column, slice) spacing in mm; between slices, measured from the positions (or slice locations)
    when there are any, else SpacingBetweenSlices or SliceThickness."""
    row, col = _number(_shared(ds, "PixelMeasuresSequence", "PixelSpacing"), 2) or (1.0, 1.0)
    steps = np.diff(along if along is not None else [])
    if len(steps) and np.median(steps) > 0:
        between = float(np.median(steps))
    else:
        declared = [_number(_shared(ds, "PixelMeasuresSequence", k)) for k in ("SpacingBetweenSlices", "SliceThickness")]
        between = next((v for v in declared if v), 1.0)
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
    # one window for the whole scan (pydicom's apply_voi_lut works per image): the first one the file names
    centre, width = (_shared(ds, "FrameVOILUTSequence", k) for k in ("WindowCenter", "WindowWidth"))
    centre, width = (_number(v[0] if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else v)
                     for v in (centre, width))
    return (centre - width / 2, centre + width / 2) if centre is not None and width and width > 0 else None

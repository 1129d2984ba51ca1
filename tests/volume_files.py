"""Real volume files for the tests and benchmarks: NIfTI written by nibabel, DICOM series by pydicom."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_slices(names, size: int = 128) -> np.ndarray:
    """(slices, size, size) uint8: the named example slices, grey, resized."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(EXAMPLES / n).convert("L").resize((size, size))) for n in names])


def canonical_from_slices(slices: np.ndarray) -> np.ndarray:
    """RAS+ voxels (X, Y, Z) whose axial slices, shown radiologically, are ``slices`` (Z, rows, columns)."""
    return np.ascontiguousarray(slices[:, ::-1, ::-1].transpose(2, 1, 0))


def write_nifti(path, slices: np.ndarray, spacing=(1.0, 1.0, 1.0), permuted: bool = False, dtype=np.int16) -> Path:
    """A NIfTI file whose axial slices are ``slices``; with ``permuted`` the stored axes are (Z, -X, Y) and the
    affine says so, so only a reader that reorients gets the slices back."""
    import nibabel as nib

    data = canonical_from_slices(slices).astype(dtype)
    sx, sy, sz = spacing
    affine = np.diag([sx, sy, sz, 1.0])
    if permuted:  # stored voxel (k, a, b) is canonical (X-1-a, b, k)
        data = np.ascontiguousarray(data[::-1].transpose(2, 0, 1))
        affine = np.array([[0, -sx, 0, sx * (data.shape[1] - 1)], [0, 0, sy, 0], [sz, 0, 0, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return Path(path)


def dicom_slice(pixels: np.ndarray, z: float, instance: int, series: str = "1.2.3.4", window=None, **extra):
    """One axial single-frame MR DICOM dataset (LPS: rows run posterior, columns to the patient's left)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = series, "1.2.3", instance
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, z]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    return ds


def write_series(folder, slices: np.ndarray, zs, instances, shuffle_seed: int = 0, **kw) -> list:
    """One file per slice, written in shuffled order under names that do not sort by position."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(shuffle_seed).permutation(len(slices))
    if len(order) > 1 and (order == np.sort(order)).all():
        order = order[::-1]  # never the position order
    paths = []
    for n, k in enumerate(order):
        path = folder / f"IM{n:04d}.dcm"
        dicom_slice(slices[k], zs[k], instances[k], **kw).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def zip_files(path, files, names=None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, f in enumerate(files):
            z.write(f, names[k] if names else Path(f).name)
    return Path(path)


def transcode(source, target, syntax: str, quality: int = 95) -> Path:
    """``source`` rewritten by GDCM with its pixels compressed as ``syntax`` (a ``gdcm.TransferSyntax`` name:
    ``JPEGLosslessProcess14_1``, ``JPEGBaselineProcess1``, ``JPEG2000``, ``RLELossless``...); the lossy
    JPEG, JPEG-LS and JPEG 2000 syntaxes are written lossy."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    if not reader.Read():
        raise ValueError(f"GDCM cannot read {source}")
    ts = getattr(gdcm.TransferSyntax, syntax)
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(ts))
    change.SetInput(reader.GetImage())
    if syntax in ("JPEGBaselineProcess1", "JPEGExtendedProcess2_4"):
        codec = gdcm.JPEGCodec()
        codec.SetLossless(False)
        codec.SetQuality(quality)
        change.SetUserCodec(codec)
    elif syntax == "JPEGLSNearLossless":
        codec = gdcm.JPEGLSCodec()
        codec.SetLossless(False)
        codec.SetLossyError(2)
        change.SetUserCodec(codec)
    elif syntax == "JPEG2000":
        codec = gdcm.JPEG2000Codec()
        codec.SetRate(0, 10)  # 10:1, lossy
        change.SetUserCodec(codec)
    if not change.Change():
        raise ValueError(f"GDCM cannot write {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise ValueError(f"GDCM cannot write {target}")
    return Path(target)


def write_sagittal_series(nifti, folder, per_file_window: bool = True) -> list:
    """A NIfTI scan rewritten as one sagittal DICOM file per slice (12-bit values), each file with the window
    of its own slice (its 0.5th to 99.5th percentiles) as scanners write automatic windows, else with none."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(nifti)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data = np.round((data - data.min()) * (4095.0 / max(float(np.ptp(data)), 1e-6))).astype(np.uint16)
    (sx, sy, sz), (_, ny, nz) = img.header.get_zooms()[:3], data.shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(data.shape[0]):  # rows run to the feet, columns to the back: pixel (r, c) is voxel (i, ny-1-c, nz-1-r)
        pixels = np.ascontiguousarray(data[i, ::-1, ::-1].T)
        ras = img.affine @ [i, ny - 1, nz - 1, 1]
        low, high = np.percentile(pixels, (0.5, 99.5))
        window = (float(low + high) / 2, float(max(high - low, 1))) if per_file_window else None
        ds = dicom_slice(pixels, 0.0, i + 1, window=window, ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
                         ImagePositionPatient=[-float(ras[0]), -float(ras[1]), float(ras[2])],
                         PixelSpacing=[float(sz), float(sy)], SliceThickness=float(sx))
        paths.append(folder / f"IM{i:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths

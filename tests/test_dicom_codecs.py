"""Compressed DICOM, as hospital archives send it: each transfer syntax decodes to the pixels of its
uncompressed original (lossless) or close to them (lossy), as a single file and inside a series; what cannot be
decoded is refused in one line that names the syntax."""
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from volume_files import dicom_slice, example_slices, transcode

from brain_mri.io.images import read_dicom
from brain_mri.io.volumes import read_volume

LOSSLESS = ["JPEGLosslessProcess14_1", "JPEGLosslessProcess14", "JPEGLSLossless", "JPEG2000Lossless", "RLELossless"]
LOSSY_16BIT = ["JPEGLSNearLossless", "JPEG2000"]
LOSSY_8BIT = ["JPEGBaselineProcess1", "JPEGExtendedProcess2_4"]  # baseline JPEG holds 8-bit samples


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """An uncompressed 16-bit MR slice (0..3000) and an 8-bit one, from an example image."""
    folder = tmp_path_factory.mktemp("originals")
    grey = example_slices(["glioma_axial.jpg"], 128)[0]
    wide = dicom_slice((grey.astype(np.float64) * 3000 / 255).astype(np.uint16), 0.0, 1)
    wide.save_as(folder / "mr16.dcm", enforce_file_format=True)
    narrow = dicom_slice(grey, 0.0, 1)
    narrow.BitsAllocated = narrow.BitsStored = 8
    narrow.HighBit, narrow.PixelData = 7, grey.tobytes()
    narrow.save_as(folder / "mr8.dcm", enforce_file_format=True)
    return {16: folder / "mr16.dcm", 8: folder / "mr8.dcm"}


def _syntax(path) -> str:
    return pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name


@pytest.mark.parametrize("syntax", LOSSLESS)
def test_lossless_syntaxes_decode_to_the_original_pixels(originals, tmp_path, syntax):
    packed = transcode(originals[16], tmp_path / "packed.dcm", syntax)
    assert pydicom.dcmread(packed, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(read_dicom(packed), read_dicom(originals[16])), _syntax(packed)


@pytest.mark.parametrize("syntax,bits", [(s, 16) for s in LOSSY_16BIT] + [(s, 8) for s in LOSSY_8BIT])
def test_lossy_syntaxes_decode_close_to_the_original(originals, tmp_path, syntax, bits):
    packed = transcode(originals[bits], tmp_path / "packed.dcm", syntax)
    original, got = (read_dicom(p).astype(np.float64) for p in (originals[bits], packed))
    span = original.max() - original.min()
    assert got.shape == original.shape and not np.array_equal(got, original)  # lossy indeed
    assert np.abs(got - original).mean() < 0.02 * span and np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_files_compressed_by_other_tools_decode_exactly(name):
    """pydicom's own test files, written by other encoders than GDCM, against their uncompressed original."""
    assert np.array_equal(read_dicom(get_testdata_file(name)), read_dicom(get_testdata_file("MR_small.dcm")))


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jpeg_gdcm.dcm",
                                  "SC_rgb_dcmtk_+eb+cy+np.dcm"])
def test_other_compressed_files_decode(name):
    pixels = read_dicom(get_testdata_file(name))
    assert pixels.ndim in (2, 3) and pixels.size >= 500 and np.ptp(pixels) > 0


def test_a_jpeg_lossless_series_with_one_position_is_read_and_scored(tmp_path):
    """The clinical series that were refused: JPEG Lossless, the same ImagePositionPatient on every file,
    slices told apart by SliceLocation (1 mm steps) and InstanceNumber, written in shuffled order."""
    from conftest import BUNDLED_MODEL

    from brain_mri import BrainMRIClassifier

    names = ["notumor_axial_1.jpg", "glioma_axial.jpg", "notumor_axial_2.jpg", "notumor_axial_3.jpg"]
    slices = example_slices(names, 160)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for n, k in enumerate([2, 0, 3, 1]):
            plain = tmp_path / f"plain{k}.dcm"
            dicom_slice(slices[k], 0.0, k + 1, SliceLocation=-40.0 + k).save_as(plain, enforce_file_format=True)
            z.write(transcode(plain, tmp_path / f"IM{n}.dcm", "JPEGLosslessProcess14_1"), f"IM{n}.dcm")
    volume = read_volume(archive)
    assert volume.count() == 4 and volume.spacing[2] == 1.0
    assert volume.reading[1].startswith("Slice order from slice locations (every file gives the same position)")
    for k in range(4):  # lossless and in slice-location order
        assert np.abs(volume.slice(k).astype(int) - slices[k]).max() <= 1
    assessment = BrainMRIClassifier.from_pretrained(BUNDLED_MODEL).assess_volume(volume, top=1)
    assert len(assessment.slices) == 4 and assessment.top[0][0] == 1 and assessment.predicted(1) == "glioma"
    assert "slice locations" in assessment.summary()


def _refusal(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "/" not in text and "plugin" not in text.lower(), text
    return text


def test_an_undecodable_syntax_is_named_in_one_line(tmp_path):
    # 12-bit lossy JPEG: GDCM (BSD) cannot decode it; the only decoder pydicom knows is GPL-licensed
    with pytest.raises(ValueError) as e:
        read_dicom(get_testdata_file("JPGExtended.dcm"))
    assert "JPEG Extended (Process 2 and 4) pixels could not be decoded" in _refusal(e)
    # High-Throughput JPEG 2000: no decoder installed
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.HTJ2KLossless
    ds.save_as(tmp_path / "htj2k.dcm")
    with pytest.raises(ValueError) as e:
        read_dicom(tmp_path / "htj2k.dcm")
    assert "compressed as High-Throughput JPEG 2000 Image Compression (Lossless Only), which this server cannot decode" in _refusal(e)
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.ImagePositionPatient[2] += 5.0  # the next slice
    ds.save_as(tmp_path / "next.dcm")
    with pytest.raises(ValueError) as e:  # the same line for a file of a series
        read_volume([tmp_path / "htj2k.dcm", tmp_path / "next.dcm"])
    assert _refusal(e).startswith("Cannot read htj2k.dcm in 2 DICOM files as DICOM: its pixels are compressed as")


def test_a_private_syntax_and_a_colour_file_in_a_series_are_named(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.3.46.670589.33.1.4.1"  # a vendor's private syntax
    ds.save_as(tmp_path / "private.dcm")
    with pytest.raises(ValueError) as e:
        read_dicom(tmp_path / "private.dcm")
    assert "transfer syntax 1.3.46.670589.33.1.4.1, which is private or unknown" in _refusal(e)
    colour = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))  # JPEG baseline, RGB
    grey = dicom_slice(example_slices(["glioma_axial.jpg"], colour.Rows)[0][:, :colour.Columns], 0.0, 1)
    grey.save_as(tmp_path / "grey.dcm", enforce_file_format=True)
    colour.ImagePositionPatient, colour.ImageOrientationPatient = [0, 0, 5], [1, 0, 0, 0, 1, 0]
    colour.SeriesInstanceUID = grey.SeriesInstanceUID
    colour.save_as(tmp_path / "colour.dcm")
    with pytest.raises(ValueError) as e:
        read_volume([tmp_path / "grey.dcm", tmp_path / "colour.dcm"])
    assert _refusal(e) == "Cannot read colour.dcm in 2 DICOM files as DICOM: colour images are not MRI."

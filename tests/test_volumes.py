"""Whole scans: real NIfTI files (nibabel) and DICOM series (pydicom) built from the example slices."""
import zipfile

import numpy as np
import pytest
from volume_files import example_slices, write_nifti, write_series, zip_files

from brain_mri.io.volumes import read_volume

NAMES = ["notumor_axial_1.jpg", "notumor_axial_2.jpg", "glioma_axial.jpg", "notumor_axial_3.jpg"]


@pytest.fixture(scope="module")
def slices():
    return example_slices(NAMES, 96)


def _corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float).ravel(), np.asarray(b, float).ravel())[0, 1])


@pytest.mark.parametrize("permuted", [False, True])
def test_nifti_slices_come_back_in_order_and_orientation(slices, tmp_path, permuted):
    # rows stored at half resolution (2 mm) beside 1 mm columns: square pixels need the rows doubled
    path = write_nifti(tmp_path / "scan.nii.gz", slices[:, ::2, :], spacing=(1.0, 2.0, 3.0), permuted=permuted)
    volume = read_volume(path)
    assert volume.kind == "NIfTI" and volume.spacing == (1.0, 2.0, 3.0) and volume.count("axial") == 4
    for k in range(4):
        got = volume.slice(k)
        assert got.shape == (96, 96) and got.dtype == np.uint8
        scores = [_corr(got, s) for s in slices]
        assert int(np.argmax(scores)) == k and scores[k] > 0.95
        assert scores[k] > _corr(got, slices[k][:, ::-1]) + 0.03 and scores[k] > _corr(got, slices[k][::-1]) + 0.1
    assert volume.slice(2, "coronal").shape == (round(4 * 3 / 1), 96)  # 4 slices of 3 mm, at 1 mm pixels


def test_dicom_series_is_sorted_by_position_not_by_file_name(slices, tmp_path):
    zs = [-30.0, -27.5, -25.0, -22.5]
    paths = write_series(tmp_path / "series", slices, zs, instances=[3, 8, 9, 20], window=(128, 256), shuffle_seed=1)
    import pydicom

    by_name = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in sorted(paths)]
    assert by_name != sorted(by_name)  # file names do not give the order
    for source in (paths, zip_files(tmp_path / "series.zip", paths)):
        volume = read_volume(source)
        assert volume.count() == 4 and volume.spacing == (1.0, 1.0, 2.5) and volume.window == (0.0, 256.0)
        for k in range(4):  # the DICOM window maps 0..256 to 0..255: the slices come back as written
            assert np.abs(volume.slice(k).astype(int) - slices[k]).max() <= 1


def test_instance_numbers_break_ties_only(slices, tmp_path):
    """Without positions, InstanceNumber orders the slices (gaps are fine)."""
    import pydicom

    paths = write_series(tmp_path / "series", slices, [0] * 4, instances=[2, 5, 6, 11], shuffle_seed=2)
    for p in paths:
        ds = pydicom.dcmread(p)
        del ds.ImagePositionPatient
        ds.save_as(p)
    volume = read_volume(paths)
    assert [int(np.argmax([_corr(volume.slice(k), s) for s in slices])) for k in range(4)] == [0, 1, 2, 3]


def test_a_sagittal_series_is_turned_to_the_canonical_orientation(slices, tmp_path):
    """A sagittal acquisition (rows run posterior, columns down) read left to right: its sagittal slices come
    back as acquired, and its axial ones are cut across them."""
    from volume_files import dicom_slice

    paths = []
    for k in range(4):  # LPS x grows to the patient's left: slice k lies 10 mm right of slice k - 1
        ds = dicom_slice(slices[k], 0.0, 10 - k, ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
                         ImagePositionPatient=[30 - 10 * k, 0, 0])
        ds.save_as(tmp_path / f"s{k}.dcm", enforce_file_format=True)
        paths.append(tmp_path / f"s{k}.dcm")
    volume = read_volume(paths[::-1])
    assert volume.spacing == (10.0, 1.0, 1.0) and volume.count("sagittal") == 4 and volume.count("axial") == 96
    for k in range(4):
        assert np.abs(volume.slice(k, "sagittal").astype(int) - slices[k]).mean() < 8
        assert _corr(volume.slice(k, "sagittal"), slices[k]) > 0.97
    assert volume.slice(48, "axial").shape == (96, 40)  # 4 slices 10 mm apart, at 1 mm pixels


def test_multi_frame_dicom_is_a_volume(slices, tmp_path):
    from volume_files import dicom_slice

    ds = dicom_slice(slices, 0.0, 1)
    ds.NumberOfFrames = len(slices)
    path = tmp_path / "multi.dcm"
    ds.save_as(path, enforce_file_format=True)
    from brain_mri.io.volumes import is_volume

    volume = read_volume(path)
    assert is_volume(path) and volume.kind == "multi-frame DICOM" and volume.count() == 4
    assert [int(np.argmax([_corr(volume.slice(k), s) for s in slices])) for k in range(4)] == [0, 1, 2, 3]


def test_a_tumour_slice_among_healthy_ones_is_ranked_first(slices, tmp_path):
    from conftest import BUNDLED_MODEL

    from brain_mri import BrainMRIClassifier

    clf = BrainMRIClassifier.from_pretrained(BUNDLED_MODEL)
    a_volume = read_volume(write_nifti(tmp_path / "scan.nii", example_slices(NAMES, 224)))
    a = clf.assess_volume(a_volume, top=2)
    assert [i for i, _ in a.top][0] == 2 and a.predicted(2) == "glioma" and not a.flagged
    assert a.top[0][1].overlay.shape == (224, 224, 3)  # explained at its own size
    for i, row in enumerate(a.slices):  # the two-thread pipeline answers as one slice at a time does
        alone = clf.assess([a_volume.slice(i)])[0]
        assert row["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-4)
        assert row["ood_score"] == pytest.approx(alone["ood_score"], rel=1e-3) and row["warning"] == alone["warning"]
    report = a.to_dict()
    assert report["top_slices"][0] == 2 and len(report["slices"]) == 4
    assert "judges each slice on its own" in report["summary"] and "no diagnosis of the patient" in report["summary"]


@pytest.fixture(scope="module")
def bundled():
    from conftest import BUNDLED_MODEL

    from brain_mri import BrainMRIClassifier

    return BrainMRIClassifier.from_pretrained(BUNDLED_MODEL)


@pytest.mark.parametrize("tags, flagged", [({"Modality": "CT"}, True), ({"BodyPartExamined": "KNEE"}, True),
                                           ({"BodyPartExamined": "BRAIN"}, False)])
def test_a_dicom_series_whose_header_names_another_modality_or_body_part_gets_no_answer(bundled, tmp_path, tags,
                                                                                         flagged):
    """Every slice of a CT or knee series is flagged and the summary says why once; a brain series is judged
    by its slices."""
    volume = read_volume(write_series(tmp_path / "series", example_slices(NAMES, 160), [0, 1, 2, 3], [1, 2, 3, 4],
                                      **tags))
    a = bundled.assess_volume(volume, top=1)
    assert volume.header == {"modality": "MR", **{"body_part" if k == "BodyPartExamined" else "modality": v
                                                   for k, v in tags.items()}}
    said = [line for line in a.reading if "header" in line]
    if flagged:
        assert len(a.flagged) == 4 and not a.top and all("header" in row["warning"] for row in a.slices)
        assert len(said) == 1 and said[0] in a.summary() and "DICOM header" in a.summary()
    else:
        assert not said and not any(row["warning"] and "header" in row["warning"] for row in a.slices) and a.top


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "/" not in text.replace("4-D", "")  # one line, no server path
    return text


def test_refusals_are_one_line(tmp_path, slices, monkeypatch):
    import nibabel as nib
    import pydicom.dataset

    decoded = []

    def no_decoding(self):
        decoded.append(True)
        raise RuntimeError("pixels decoded before the header was checked")

    four_d = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), str(four_d))
    with pytest.raises(ValueError) as e:
        read_volume(four_d)
    assert "holds 3 volumes" in _one_line(e)

    huge = tmp_path / "huge.nii"  # a header declaring 4 billion voxels over a few bytes of data
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 1000))
    header.set_data_dtype(np.int16)
    huge.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    with pytest.raises(ValueError) as e:
        read_volume(huge)
    assert "more than the 48 million" in _one_line(e)
    # malformed numbers in a header (three pixel spacings, half an orientation): the defaults, not a traceback
    odd = read_volume(write_series(tmp_path / "odd", slices[:2], [0, 1], [1, 2], PixelSpacing=[1.0, 2.0, 3.0],
                                   ImageOrientationPatient=[1, 0, 0]))
    assert odd.spacing == (1.0, 1.0, 1.0) and odd.count() == 2

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))
    a = write_series(tmp_path / "a", slices[:2], [0, 1], [1, 2], series="1.2.3.1")
    b = write_series(tmp_path / "b", slices[2:], [2, 3], [3, 4], series="1.2.3.2")
    with pytest.raises(ValueError) as e:
        read_volume(zip_files(tmp_path / "mixed.zip", a + b, names=["a1.dcm", "a2.dcm", "b1.dcm", "b2.dcm"]))
    assert "mixes 2 DICOM series" in _one_line(e)
    with pytest.raises(ValueError) as e:  # two echoes at each position
        read_volume(write_series(tmp_path / "echoes", slices, [0, 0, 1, 1], [1, 2, 3, 4]))
    assert "4 images at 2 positions" in _one_line(e)
    assert not decoded


def test_archive_refusals(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("IM1.dcm", b"\0" * 50_000_000)
    with pytest.raises(ValueError) as e:
        read_volume(bomb)
    assert "zip bomb" in _one_line(e)
    escaping = tmp_path / "escape.zip"
    with zipfile.ZipFile(escaping, "w") as z:
        z.writestr("../../etc/evil.dcm", b"DICM")
    with pytest.raises(ValueError, match="escapes the archive"):
        read_volume(escaping)
    junk = tmp_path / "notes.zip"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("readme.txt", b"no images here")
    with pytest.raises(ValueError) as e:
        read_volume(junk)
    assert "holds no DICOM image" in _one_line(e)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError) as e:
        read_volume(broken)
    assert _one_line(e).startswith("Cannot read broken.nii.gz as NIfTI")


def test_files_that_disagree_on_the_window_get_the_scans_own(slices, tmp_path):
    """Scanners often write an automatic window per slice: the first file's (a narrow one, for a dark slice at
    the edge of the head) would turn the rest white. The scan's robust window keeps every slice readable."""
    import pydicom

    from brain_mri.io.volumes import _robust_window

    scaled = slices.astype(np.float64) * 4  # 0..1020
    scaled[0] *= 0.2  # the first slice: the edge of the head, dark
    paths = write_series(tmp_path / "series", scaled, [0.0, 2.0, 4.0, 6.0], [1, 2, 3, 4])
    for p in paths:  # each file's window from its own slice, as Siemens writes them
        ds = pydicom.dcmread(p)
        low, high = np.percentile(ds.pixel_array, (1, 99))
        ds.WindowCenter, ds.WindowWidth = float((low + high) / 2), float(high - low)
        ds.save_as(p)
    volume = read_volume(paths)
    assert volume.window == _robust_window(volume.data)
    assert volume.reading[0] == ("Window: the scan's own 0.5th to 99.5th intensity percentiles, because its files "
                                 "name 4 different windows.")
    for k in range(1, 4):  # the slices come back as written, scaled once for all: no slice is burnt white
        assert (volume.slice(k) == 255).mean() < 0.05 and _corr(volume.slice(k), slices[k]) > 0.99


def test_one_window_that_clips_most_of_the_head_is_set_aside(slices, tmp_path):
    volume = read_volume(write_series(tmp_path / "narrow", slices, [0, 1, 2, 3], [1, 2, 3, 4], window=(10, 10)))
    assert volume.reading[0].endswith("because the files' DICOM window would clip most of the head.")
    kept = read_volume(write_series(tmp_path / "fair", slices, [0, 1, 2, 3], [1, 2, 3, 4], window=(100, 180)))
    assert kept.window == (10.0, 190.0) and kept.reading == ["Window: the files' DICOM window (centre 100, width 180)."]


def test_a_series_with_one_position_is_ordered_by_slice_location_then_instance_number(slices, tmp_path):
    import pydicom

    locations = [-12.0, -10.5, -9.0, -7.5]
    paths = write_series(tmp_path / "located", slices, [5.0] * 4, instances=[1, 2, 3, 4], shuffle_seed=3)
    for p in paths:  # same ImagePositionPatient everywhere; SliceLocation in 1.5 mm steps, instance numbers shuffled
        ds = pydicom.dcmread(p)
        k = int(ds.InstanceNumber) - 1
        ds.SliceLocation, ds.InstanceNumber = locations[k], [7, 3, 9, 1][k]
        ds.save_as(p)
    volume = read_volume(paths)
    assert volume.spacing[2] == 1.5 and volume.reading[1] == ("Slice order from slice locations (every file gives "
                                                             "the same position): which end is which follows them.")
    assert [int(np.argmax([_corr(volume.slice(k), s) for s in slices])) for k in range(4)] == [0, 1, 2, 3]

    numbered = write_series(tmp_path / "numbered", slices, [5.0] * 4, instances=[2, 4, 6, 8], shuffle_seed=4,
                            SpacingBetweenSlices=3.0)
    volume = read_volume(numbered)
    assert volume.spacing[2] == 3.0 and "Slice order from instance numbers" in volume.reading[1]
    assert [int(np.argmax([_corr(volume.slice(k), s) for s in slices])) for k in range(4)] == [0, 1, 2, 3]


def _one_position(folder, slices, **tags):
    """A series whose four files share one ImagePositionPatient; ``tags`` give each file's values."""
    import pydicom

    paths = write_series(folder, slices, [5.0] * 4, instances=[1, 2, 3, 4])
    for p in paths:
        ds = pydicom.dcmread(p)
        for tag, values in tags.items():
            setattr(ds, tag, values[int(ds.InstanceNumber) - 1])
        ds.save_as(p)
    return paths


@pytest.mark.parametrize("tags", [
    {"EchoTime": [10, 10, 90, 90], "SliceLocation": [0.0, 1.0, 2.0, 3.0]},  # two echoes: never one volume
    {"SliceLocation": [0.0, 0.0, 0.0, 0.0]},  # four images at one place
    {"TemporalPositionIdentifier": [1, 2, 3, 4]},  # time points, and nothing else to tell them apart
    {"AcquisitionTime": ["101500", "101530", "101600", "101630"]},
])
def test_a_4d_series_at_one_position_is_still_refused(slices, tmp_path, tags):
    with pytest.raises(ValueError) as e:
        read_volume(_one_position(tmp_path / "dynamic", slices, **tags))
    assert "(a 4-D or multi-echo series)" in _one_line(e)


def test_distinct_slice_locations_tell_a_2d_acquisition_from_time_points(slices, tmp_path):
    """A sequential 2-D acquisition has one acquisition time per slice: with distinct slice locations it is
    still one volume."""
    paths = _one_position(tmp_path / "sequential", slices, SliceLocation=[0.0, 2.0, 4.0, 6.0],
                          AcquisitionTime=["101500", "101502", "101504", "101506"])
    volume = read_volume(paths)
    assert volume.count() == 4 and volume.spacing[2] == 2.0 and "slice locations" in volume.reading[1]


def test_dicom_windows_that_would_hide_the_head_are_set_aside(slices, tmp_path):
    wide = read_volume(write_series(tmp_path / "wide", slices, [0, 1, 2, 3], [1, 2, 3, 4], window=(32767, 65535)))
    assert wide.reading[0].endswith("would squeeze the head into a few grey levels.")
    assert wide.slice(2).max() > 150  # not black (the full-range window maps 0..255 to grey 0..1)
    import pydicom

    some = write_series(tmp_path / "some", slices, [0, 1, 2, 3], [1, 2, 3, 4], window=(128, 256))
    ds = pydicom.dcmread(some[0])
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(some[0])
    assert read_volume(some).reading[0].endswith("because not every file names a window.")


def test_head_sections_and_the_end_of_the_head_caveat(slices, tmp_path):
    from PIL import Image

    from brain_mri.serving.scans import VolumeAssessment

    small = np.zeros_like(slices[0])  # the same head at 40% of its size: a slice near the vertex
    small[29:67, 29:67] = np.asarray(Image.fromarray(slices[0]).resize((38, 38)))
    volume = read_volume(write_nifti(tmp_path / "scan.nii.gz", np.stack([slices[0], slices[1], small])))
    share = volume.sections()
    assert share.max() == 1.0 and abs(share[2] / share[0] - 0.4 ** 2) < 0.03  # area goes with the square
    rows = [{"probabilities": {"glioma": g, "meningioma": 0.0, "notumor": 1 - g, "pituitary": 0.0}, "warning": None,
             "ood_score": 0.0} for g in (0.1, 0.2, 0.9)]
    near_end = VolumeAssessment("scan", "NIfTI", "axial", rows, sections=list(share))
    assert "slice 2 (90.0%" in near_end.summary() and "That slice lies near an end of the head" in near_end.summary()
    assert near_end.to_dict()["slices"][2]["head_section"] == share[2]
    mid_head = VolumeAssessment("scan", "NIfTI", "axial", rows, sections=[0.2, 0.3, 0.9])
    assert "near an end of the head" not in mid_head.summary()

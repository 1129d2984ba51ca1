"""``brain-mri predict`` over files and folders, and the static gallery."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brain_mri.config import CLASS_NAMES
from conftest import run_cli


brain_mri = run_cli


@pytest.fixture(scope="module")
def folder_with_a_bad_file(tiny_data, tmp_path_factory):
    """Testing's class folders (12 slices) plus a corrupt JPEG and a zero-byte PNG in a sub-folder."""
    root, _ = tiny_data
    folder = tmp_path_factory.mktemp("batch") / "scans"
    shutil.copytree(root / "Testing", folder)
    (folder / "glioma" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    (folder / "meningioma" / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, and not an image extension: not picked up")
    return folder


def test_predict_folder_to_csv_lists_and_skips_bad_files(answering_folder, folder_with_a_bad_file, tmp_path):
    from brain_mri import BrainMRIClassifier

    out, _ = answering_folder
    r = brain_mri("predict", "--model", out, folder_with_a_bad_file, "--csv", tmp_path / "p.csv")
    assert r.returncode == 1, r.stderr  # some files were skipped
    assert "broken.jpg" in r.stderr and "empty.png" in r.stderr and "Traceback" not in r.stderr
    assert "12 image(s) or slice(s) predicted" in r.stderr and "2 unreadable file(s) skipped" in r.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 12 and {r["label"] for r in rows} == set(CLASS_NAMES)
    assert list(rows[0]) == ["file", "plane", "slice", "head_section", "label", "predicted",
                             *[f"p_{c}" for c in CLASS_NAMES], "flagged", "ood_score", "warning"]
    clf = BrainMRIClassifier.from_pretrained(out)
    for row in rows[:3]:  # the same answer as one image at a time
        probs = clf.predict(row["file"])
        assert row["predicted"] == ("" if row["flagged"] == "1" else max(probs, key=probs.get))
        assert [float(row[f"p_{c}"]) for c in CLASS_NAMES] == pytest.approx(list(probs.values()), abs=1e-5)


def test_predict_json_and_exit_status(answering_folder, folder_with_a_bad_file, tmp_path):
    out, _ = answering_folder
    r = brain_mri("predict", "--model", out, folder_with_a_bad_file / "pituitary", "--json", tmp_path / "p.json")
    assert r.returncode == 0, r.stderr  # nothing unreadable there
    doc = json.loads((tmp_path / "p.json").read_text())
    assert len(doc["predictions"]) == 3 and doc["skipped"] == []
    assert all(p["label"] == "pituitary" and set(p["probabilities"]) == set(CLASS_NAMES) for p in doc["predictions"])
    r = brain_mri("predict", "--model", out, tmp_path / "nothing-here")
    assert r.returncode == 1 and "nothing-here" in r.stderr and "Traceback" not in r.stderr
    r = brain_mri("predict", "--model", out, tmp_path)  # a folder without images: one clear line
    assert r.returncode == 2 and "No image, DICOM or scan files" in r.stderr


def test_gallery_is_a_static_site_with_counts(answering_folder, folder_with_a_bad_file, tmp_path):
    out, _ = answering_folder
    site = tmp_path / "site"
    r = brain_mri("gallery", "--model", out, folder_with_a_bad_file, "--out", site)
    assert r.returncode == 1 and "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    page = (site / "index.html").read_text()
    assert page.count('<div class="card') == 12
    pred = list(csv.DictReader(open(_predict_csv(out, folder_with_a_bad_file, tmp_path))))
    right = sum(p["label"] == p["predicted"] for p in pred)
    flagged = sum(p["flagged"] == "1" for p in pred)
    assert f"{right} right" in page and f"{12 - right - flagged} wrong" in page and "12 images" in page
    assert f"{flagged} not taken for a brain MRI" in page and page.count('class="card flagged"') == flagged
    images = sorted(p.name for p in (site / "images").iterdir())
    assert len(images) == 24 and all(f'src="images/{n}"' in page for n in images)  # relative: no server needed
    assert str(tmp_path) not in page and str(out) not in page  # no local paths on a shareable page
    assert "Model: local model (test_resnet, weights " in page


def _predict_csv(model, folder, tmp_path):
    brain_mri("predict", "--model", model, folder, "--csv", tmp_path / "g.csv")
    return tmp_path / "g.csv"


def test_gallery_push_offline_fails_after_the_site_is_complete(answering_folder, tiny_data, tmp_path):
    out, _ = answering_folder
    root, _ = tiny_data
    site = tmp_path / "site"
    r = brain_mri("gallery", "--model", out, root / "Testing" / "glioma", "--out", site, "--push-to-hub", "someone/gallery",
                  env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Cannot push to someone/gallery" in r.stderr and "Traceback" not in r.stderr
    assert "--repo-type space" in r.stderr
    assert (site / "index.html").read_text().count('<div class="card') == 3


def test_predict_on_scans_writes_one_row_per_slice(answering_folder, tmp_path):
    from volume_files import example_slices, write_nifti, write_series

    out, _ = answering_folder
    pictures = example_slices(["notumor_axial_1.jpg", "glioma_axial.jpg", "notumor_axial_2.jpg"], 64)
    scan = write_nifti(tmp_path / "scan.nii.gz", pictures, spacing=(1.0, 1.0, 2.0))
    write_series(tmp_path / "series", pictures, [0, 2, 4], [1, 4, 5])
    r = brain_mri("predict", "--model", out, scan, "--series", tmp_path / "series", "--plane", "coronal",
                  "--csv", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(Path(row["file"]).name, row["plane"], int(row["slice"])) for row in rows] == [
        (name, "coronal", k) for name in ("scan.nii.gz", "series") for k in range(64)]
    by_file = {}
    for row in rows:  # the NIfTI and the DICOM series hold the same slices: the same answers
        by_file.setdefault(Path(row["file"]).name, []).append([float(row[f"p_{c}"]) for c in CLASS_NAMES])
    assert np.allclose(by_file["scan.nii.gz"], by_file["series"], atol=0.02)
    assert "128 image(s) or slice(s) predicted" in r.stderr
    sections = [float(row["head_section"]) for row in rows[:64]]  # coronal: the head is widest mid-scan
    assert max(sections) == 1 and sections[0] < 0.5 and sections[32] > 0.5, sections

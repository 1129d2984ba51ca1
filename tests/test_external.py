"""benchmarks/external.py on a small subset of the external data (skipped where ``../shared`` is absent): its
figures are the model's own answers, counted again here through the public API."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLED_MODEL, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
EXTERNAL = Path(os.environ.get("BRAIN_MRI_EXTERNAL", ROOT.parent / "shared" / "data" / "external"))
pytestmark = pytest.mark.skipif(not (EXTERNAL / "tcga_du_7294").is_dir(), reason="no external data here")


def test_the_external_table_counts_the_models_answers(tmp_path, capsys):
    import json

    import external
    import nibabel as nib

    from brain_mri import BrainMRIClassifier

    rows = external.main(["--model", str(BUNDLED_MODEL), "--data", str(EXTERNAL), "--limit", "6",
                          "--only", "TCGA-DU-7294_t2", "chris_t1", "--json", str(tmp_path / "rows.json")])
    printed = capsys.readouterr().out
    clf = BrainMRIClassifier.from_pretrained(BUNDLED_MODEL)

    images = sorted(p for p in (EXTERNAL / "navoneel_tumour").iterdir() if p.suffix.lower() in (".jpg", ".png"))[:6]
    answers = [r for r in clf.assess(images) if not r["warning"]]
    called = [max(r["probabilities"], key=r["probabilities"].get) for r in answers]
    first = rows[0]
    assert first["set"] == "navoneel_tumour (2-D)" and first["n"] == 6 and first["answered"] == len(answers)
    assert first["tumour"] == sum(c != "notumor" for c in called) and sum(first["classes"].values()) == len(answers)

    # the tumour range comes from the mask, the per-slice answers from assess_volume
    scan = EXTERNAL / "tcga_du_7294" / "TCGA-DU-7294_t2.nii.gz"
    mask = np.asarray(nib.as_closest_canonical(nib.load(str(next(scan.parent.glob("*mask*"))))).dataobj)
    z = np.nonzero(mask.any(axis=(0, 1)))[0]
    inside, rest = (r for r in rows if r["set"] == "TCGA-DU-7294_t2")
    assert inside["slices"] == f"{z.min()}–{z.max()} (tumour)" and inside["n"] == z.max() - z.min() + 1
    a = clf.assess_volume(scan, top=0)
    assert inside["n"] + rest["n"] == len(a.slices) and inside["flagged"] + rest["flagged"] == len(a.flagged)
    in_range = [a.predicted(i) for i in range(z.min(), z.max() + 1)]
    assert inside["answered"] == sum(c is not None for c in in_range)
    assert inside["tumour"] == sum(c not in (None, "notumor") for c in in_range)
    answered = [i for i in range(len(a.slices)) if i not in a.flagged]
    assert inside["top_slice"] == min(answered, key=lambda i: a.slices[i]["probabilities"]["notumor"])

    # the healthy skull-on T1 rewritten as sagittal DICOM files with a window each: read with the scan's own window
    # and answered as its NIfTI is (the targets: 60% of its slices answered, 85% of those "no tumour")
    nifti, series = (next(r for r in rows if r["set"].startswith("chris_t1") and (" as " in r["set"]) == s)
                     for s in (False, True))
    assert "because its files name" in series["reading"][0] and series["n"] == nifti["n"] == 190
    assert series["answered"] >= 0.6 * series["n"] and series["classes"]["notumor"] >= 0.85 * series["answered"]
    assert abs(series["answered"] - nifti["answered"]) <= 3
    # and counted again over the slices that cut the head well, the ones a healthy scan's target is about
    head = next(r for r in rows if r["set"] == "chris_t1" and r["slices"].startswith("inside the head"))
    b = clf.assess_volume(EXTERNAL / "healthy" / "chris_t1.nii.gz", top=0)
    in_head = [i for i, v in enumerate(b.sections) if v >= external.IN_HEAD]
    assert 0 < head["n"] == len(in_head) < nifti["n"] and head["answered"] == sum(i not in b.flagged for i in in_head)
    assert head["classes"].get("notumor", 0) == sum(b.predicted(i) == "notumor" for i in in_head)

    assert f"| {first['flagged']} | {first['answered']} / 6 (" in printed  # the printed table carries the rows
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and "/" not in saved["command"].replace("benchmarks/", "")

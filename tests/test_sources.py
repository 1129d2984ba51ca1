"""Other-source training slices: the manifest, cutting volumes into labelled slices, the cache, the subject
split, the balance and the sampler (``train.py --extra-sources``)."""
import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from volume_files import write_nifti

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
FIELDS = ("path", "kind", "truth", "label", "subject", "contrast", "skull", "source", "licence")


def _head(shape=(40, 48, 36)) -> np.ndarray:
    """An ellipsoid 'head' of intensity 100-200 on a 0 background (RAS+ voxel order)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    inside = x ** 2 / 0.8 + y ** 2 / 0.8 + z ** 2 / 0.8 < 1
    return np.where(inside, 100 + 100 * np.abs(x), 0).astype(np.int16)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A folder with two healthy volumes, two volumes with a tumour label (axial slices 20-24) and a 2-D slice."""
    root = tmp_path_factory.mktemp("sources")
    head = _head()
    write_nifti(root / "healthy.nii.gz", head.transpose(2, 1, 0))
    write_nifti(root / "healthy2.nii.gz", _head((36, 44, 40)).transpose(2, 1, 0))
    label = np.zeros_like(head)
    label[14:22, 20:30, 20:25] = 2
    write_nifti(root / "tumour.nii.gz", head.transpose(2, 1, 0))
    write_nifti(root / "tumour_label.nii.gz", label.transpose(2, 1, 0))
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(root / "flat.png")
    rows = [("healthy.nii.gz", "volume", "notumor", "", "h1", "T1", "on", "Healthy set", "CC BY"),
            ("healthy2.nii.gz", "volume", "notumor", "", "h2", "T1", "on", "Healthy set", "CC BY"),
            ("tumour.nii.gz", "volume", "glioma", "tumour_label.nii.gz", "g1", "T1c", "off", "Glioma set", "CC BY-NC-SA 3.0"),
            ("tumour.nii.gz", "volume", "glioma", "tumour_label.nii.gz", "g2", "FLAIR", "off", "Glioma set", "CC BY-NC-SA 3.0"),
            ("flat.png", "slice", "notumor", "", "", "T1", "off", "Slice set", "CC BY")]
    with (root / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows([FIELDS, *rows])
    return root


def _layout_check(volume_file):
    """write_nifti stores slices (Z, Y, X); the reader returns RAS+ (X, Y, Z)."""
    from brain_mri.io.volumes import read_volume

    return read_volume(volume_file).data.shape


def test_volumes_become_labelled_slices_in_three_planes(sources, tmp_path, monkeypatch):
    from brain_mri.training.sources import SliceRules, cut_sources

    monkeypatch.setenv("BRAIN_MRI_CACHE", str(tmp_path))
    rules = SliceRules(stride=1, min_head=0.05, tumour_share=0.01, margin=3)
    rows = cut_sources(sources, rules)
    healthy = [r for r in rows if r["source"] == "Healthy set"]
    assert {r["plane"] for r in healthy} == {"axial", "coronal", "sagittal"}
    assert {r["label"] for r in healthy} == {"notumor"} and all(Path(r["file"]).is_file() for r in rows)
    axial = sorted(int(r["index"]) for r in healthy if r["plane"] == "axial" and r["subject"] == "h1")
    assert 0 < len(axial) < _layout_check(sources / "healthy.nii.gz")[2]  # the empty ends are not "in the head"
    tumour = [r for r in rows if r["subject"] == "g1"]
    glioma = [int(r["index"]) for r in tumour if r["plane"] == "axial" and r["label"] == "glioma"]
    clear = [int(r["index"]) for r in tumour if r["plane"] == "axial" and r["label"] == "notumor"]
    assert set(glioma) == set(range(20, 25))
    assert clear and all(i < 20 - 3 or i > 24 + 3 for i in clear)  # a margin of skipped slices
    for r in tumour:
        if r["label"] == "glioma":  # the box lies inside the slice and holds the label
            w, h = Image.open(r["file"]).size
            x0, y0, x1, y1 = (float(r[k]) for k in ("x0", "y0", "x1", "y1"))
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and (x1 - x0) < w / 2
        else:
            assert r["x0"] == ""
    assert [r["file"] for r in rows if r["source"] == "Slice set"] == [str(sources / "flat.png")]


def test_the_cache_is_cut_once_and_anew_when_the_rules_change(sources, tmp_path, monkeypatch):
    from brain_mri.training.sources import SliceRules, cut_sources

    monkeypatch.setenv("BRAIN_MRI_CACHE", str(tmp_path))
    first = cut_sources(sources, SliceRules(stride=2))
    index = next(tmp_path.rglob("index.csv"))
    stamp = index.stat().st_mtime_ns
    assert cut_sources(sources, SliceRules(stride=2)) == first and index.stat().st_mtime_ns == stamp
    fewer = cut_sources(sources, SliceRules(stride=4))
    assert len(list(tmp_path.rglob("index.csv"))) == 2 and len(fewer) < len(first)
    assert not [r for r in cut_sources(sources, SliceRules(stride=2), exclude=("Glioma set",))
                if r["source"] == "Glioma set"]


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[1].__setitem__(2, "tumour"), "truth one of"),
    (lambda rows: rows[3].__setitem__(3, ""), "needs its label map"),
    (lambda rows: rows[1].__setitem__(0, "gone.nii.gz"), "no such file gone.nii.gz"),
])
def test_a_bad_manifest_is_refused_with_its_line(sources, tmp_path, change, message):
    from brain_mri.training.sources import SourceError, read_manifest

    rows = list(csv.reader((sources / "manifest.csv").open()))
    change(rows)
    for f in ("healthy.nii.gz", "healthy2.nii.gz", "tumour.nii.gz", "tumour_label.nii.gz", "flat.png"):
        (tmp_path / f).write_bytes((sources / f).read_bytes())
    with (tmp_path / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(SourceError, match=message):
        read_manifest(tmp_path)
    with pytest.raises(SourceError, match="no manifest.csv"):
        read_manifest(tmp_path / "nowhere")


def _extra(groups, subjects):
    from brain_mri.training.data import DecodedSplit
    from brain_mri.training.mixing import ExtraSlices

    n = len(groups)
    split = DecodedSplit(np.zeros((n, 3, 4, 4), np.uint8), np.array([0 if "glioma" in g else 2 for g in groups]),
                         [f"s{i}" for i in range(n)], [str(i) for i in range(n)], np.zeros((n, 4), np.float32),
                         np.zeros((n, 4), np.float32))
    return ExtraSlices(split, np.array([g.split("/")[0] for g in groups]), np.array(subjects), np.array(groups),
                       np.full((n, 4), np.nan, np.float32))


def test_subjects_are_held_out_whole_in_every_source():
    from brain_mri.training.mixing import split_subjects

    groups = ["A/notumor/T1/axial"] * 50 + ["B/glioma/T1c/axial"] * 20
    subjects = [f"a{i % 10}" for i in range(50)] + [f"b{i % 5}" for i in range(20)]
    train, held = split_subjects(_extra(groups, subjects), 0.2, seed=1)
    assert not set(train.subject) & set(held.subject)
    assert {s[0] for s in held.subject} == {"a", "b"} and len(set(held.subject)) == 3  # 2 of 10, 1 of 5


def test_sources_groups_and_slices_are_balanced():
    from brain_mri.training.mixing import balance_weights

    groups = np.array(["A/notumor/T1/axial"] * 900 + ["A/notumor/T1/coronal"] * 100 + ["B/glioma/T1c/axial"] * 10)
    weights, shares = balance_weights(groups)
    assert weights.sum() == pytest.approx(1)
    assert weights[groups == "B/glioma/T1c/axial"].sum() == pytest.approx(0.5)
    assert weights[groups == "A/notumor/T1/coronal"].sum() == pytest.approx(0.25) == shares["A/notumor/T1/coronal"]
    weights, _ = balance_weights(groups, {"B": 3.0})
    assert weights[groups == "B/glioma/T1c/axial"].sum() == pytest.approx(0.75)
    weights, _ = balance_weights(groups, {"A/notumor/T1/coronal": 3.0})  # a group against its source's others
    assert weights[groups == "A/notumor/T1/coronal"].sum() == pytest.approx(0.375)
    assert weights[groups == "B/glioma/T1c/axial"].sum() == pytest.approx(0.5)


def test_each_epoch_shows_every_kaggle_slice_once_and_draws_its_share():
    from brain_mri.training.mixing import MixedSampler

    weights = np.r_[np.full(10, 0.09), np.full(10, 0.01)]
    sampler = MixedSampler(300, weights, share=0.25, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 400
    kaggle = sorted(i for i in first if i < 300)
    assert kaggle == list(range(300))
    drawn = np.array([i - 300 for i in first if i >= 300])
    assert (drawn < 10).mean() > 0.75  # weights 9 : 1
    assert list(sampler) == first  # a resumed epoch draws the same
    sampler.set_epoch(1)
    assert list(sampler) != first


@pytest.mark.parametrize("licences, expected", [
    (["CC BY-SA 3.0", "CC BY"], "apache-2.0"),  # no NC source: the code's licence
    (["CC BY-SA 3.0", "CC BY-NC-SA 3.0"], "cc-by-nc-sa-3.0"),
    (["CC BY-NC-SA 3.0", "CC BY-NC 4.0"], "other"),  # two NC licences: the card's text must say which
    (["Research use only (NC)"], "other")])
def test_weights_trained_on_a_non_commercial_source_carry_its_licence(licences, expected):
    from brain_mri.card import weights_license
    from brain_mri.config import non_commercial

    sources = {f"s{i}": {"licence": x} for i, x in enumerate(licences)}
    metrics = {"other_sources": {"sources": sources, "non_commercial": any(map(non_commercial, licences))}}
    assert weights_license(metrics) == expected
    assert weights_license({}) == "apache-2.0"


def test_the_external_score_counts_a_flagged_slice_as_a_miss():
    import external

    rows = [{"set": "x (2-D)", "truth": "tumour", "slices": "all", "n": 10, "answered": 8, "tumour": 6},
            {"set": "v_t1", "truth": "tumour", "slices": "3–7 (tumour)", "n": 5, "answered": 5, "tumour": 5},
            {"set": "v_t2", "truth": "tumour", "slices": "3–7 (tumour)", "n": 5, "answered": 4, "tumour": 0},
            {"set": "v_t2", "truth": "outside the tumour", "slices": "the rest", "n": 9, "answered": 9, "tumour": 9},
            {"set": "h", "truth": "no tumour", "slices": "inside the head (4)", "n": 4, "answered": 4, "tumour": 1},
            {"set": "h as a DICOM series", "truth": "no tumour", "slices": "inside the head (4)", "n": 4,
             "answered": 0, "tumour": 0},
            {"set": "unmasked tumour", "truth": "tumour", "slices": "inside the head (4)", "n": 4, "answered": 4,
             "tumour": 4}]
    score = external.external_score(rows)
    assert [p["share"] for p in score["parts"].values()] == [0.6, 0.5, 0.75]
    assert score["score"] == pytest.approx(61.7)
    assert external.external_score(rows[:3])["score"] is None


def test_a_run_with_other_sources_draws_them_reports_held_out_subjects_and_fits_the_gate(tiny_data, sources,
                                                                                         tmp_path):
    import json

    from conftest import TINY_ARGS, run_train

    root, _ = tiny_data
    out = tmp_path / "model"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS, "--box-loss", "1",
                  "--extra-sources", sources, "--extra-share", "0.4", "--extra-held-out", "0.5",
                  "--extra-source-weight", "Glioma set=2", env={"BRAIN_MRI_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    extra = metrics["other_sources"]
    assert extra["share"] == 0.4 and extra["train"] > 0 and extra["held_out"] > 0
    assert sum(extra["group_shares"].values()) == pytest.approx(1, abs=1e-3)
    held = extra["held_out_metrics"]["all"]
    assert held["slices"] == extra["held_out"] and 0 <= held["accuracy"] <= 1
    assert held["subjects"] == 2 and set(extra["held_out_metrics"]) == {"all", "Healthy set", "Glioma set"}
    args = json.loads((out / "training_args.json").read_text())
    assert args["extra_source_shares"] == extra["group_shares"] and args["extra_source_weight"] == ["Glioma set=2"]
    assert "--extra-source-weight 'Glioma set=2'" in args["command"]  # the card's command can be pasted back
    glioma = sum(v for k, v in extra["group_shares"].items() if k.startswith("Glioma set"))
    assert glioma == pytest.approx(2 / 4, abs=1e-3)  # weight 2 against 1 + 1
    card = (out / "README.md").read_text()
    assert "### Other sources" in card and "| Glioma set | CC BY-NC-SA 3.0 | off | FLAIR/T1c |" in card
    assert extra["non_commercial"] and "Non-commercial use only" in card
    assert "\nlicense: cc-by-nc-sa-3.0\n" in card  # the Hub's licence field says so too, not the code's Apache-2.0
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["license"] == "cc-by-nc-sa-3.0"
    # the gate's fit holds the other-source training slices as groups of their own
    assert metrics["ood"]["fitted_on"] >= metrics["split_sizes"]["train"] + extra["train"]
    # and so does a refit of the folder's gate (brain-mri fit-ood), on the same slices
    from conftest import run_cli

    refit = run_cli("fit-ood", "--model", out, "--data", root, env={"BRAIN_MRI_CACHE": str(tmp_path / "cache")})
    assert refit.returncode == 0, refit.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["ood"]["fitted_on"] == metrics["ood"]["fitted_on"]

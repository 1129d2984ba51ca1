"""Loading, the validation split and the duplicate audit on the tiny dataset."""
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from brain_mri.config import CLASS_NAMES
from brain_mri.training.data import DataError, check_kaggle_layout, prepare_data, standardise
from brain_mri.training.dedup import duplicate_groups, thumbnail
from conftest import make_tiny_dataset

CFG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
       "crop_pct": 1.0, "crop_mode": "center"}


@pytest.fixture(scope="module")
def bundle(tiny_data):
    root, _ = tiny_data
    return prepare_data(str(root), CFG, val_fraction=0.2, seed=0, progress=False)


def test_split_sizes_and_skipped_warning(tiny_data, caplog):
    root, planted = tiny_data
    with caplog.at_level(logging.WARNING, logger="brain_mri"):
        b = prepare_data(str(root), CFG, val_fraction=0.2, seed=0, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Skipped 1 unreadable" in warnings[0] and planted["corrupt"] in warnings[0]
    assert b.skipped[0][0] == planted["corrupt"]
    readable = planted["train_readable"]
    assert len(b.train) + len(b.val) + b.report.dropped_train == readable
    assert len(b.test) == planted["test_total"]
    assert b.val.images.shape[1:] == (3, 32, 32) and b.val.images.dtype == np.uint8
    # stratified: every class is in validation
    assert set(b.val.labels.tolist()) == set(range(len(CLASS_NAMES)))


def test_duplicate_audit_counts_and_leak_free(bundle, tiny_data):
    _, planted = tiny_data
    r = bundle.report
    exact_cross = r.across["exact"]["train-test"] + r.across["exact"]["val-test"]
    near_cross = r.across["near"]["train-test"] + r.across["near"]["val-test"]
    assert exact_cross == 1  # the byte copy of a test image
    assert near_cross == 2  # plus the resized copy
    # the within-Training copy pair stays on one side of the split
    assert r.within["exact"]["train"] + r.within["exact"]["val"] == 1
    assert r.across["near"]["train-val"] == 0
    # leak-free test = everything but the two copied test images
    leaky = {n for n, lf in zip(bundle.test.names, bundle.test_leak_free) if not lf}
    assert leaky == set(planted["copied_test"])
    assert r.leak_free_test == planted["test_total"] - 2
    # no training image that remains is a copy of a test image
    _, near = duplicate_groups(bundle.train.md5 + bundle.test.md5, np.concatenate([bundle.train.thumbs, bundle.test.thumbs]))
    assert not set(near[: len(bundle.train)]) & set(near[len(bundle.train):])


def test_keep_leaks_keeps_copies(tiny_data, bundle):
    root, _ = tiny_data
    kept = prepare_data(str(root), CFG, val_fraction=0.2, seed=0, progress=False, drop_leaks=False)
    assert kept.report.dropped_train == 0
    assert len(kept.train) == len(bundle.train) + bundle.report.dropped_train


def test_validation_split_is_seeded(tiny_data, bundle):
    root, _ = tiny_data
    again = prepare_data(str(root), CFG, val_fraction=0.2, seed=0, progress=False)
    other = prepare_data(str(root), CFG, val_fraction=0.2, seed=1, progress=False)
    assert again.val.names == bundle.val.names
    assert other.val.names != bundle.val.names


def test_near_copies_group_transitively():
    # a ~ b and b ~ c (each 1.0 grey level apart on average), a and c 2.0 apart: one group
    a = np.zeros(256, np.float32)
    thumbs = np.stack([a, a + 1, a + 2, a + 100])
    exact, near = duplicate_groups(["x", "y", "z", "x"], thumbs, threshold=1.5)
    assert exact[0] == exact[3] and len(set(exact)) == 3  # same bytes, however different the thumbnails
    assert near[0] == near[1] == near[2] == near[3]  # ... and exact copies join the near group


def test_hub_style_labels_are_aligned_to_class_order():
    import datasets

    names = ["pituitary", "notumor", "glioma", "meningioma"]  # another order than CLASS_NAMES
    split = datasets.Dataset.from_dict(
        {"tumour": [0, 1, 2, 3, 0], "img": [{"bytes": b"", "path": f"{i}.jpg"} for i in range(5)]},
        features=datasets.Features({"tumour": datasets.ClassLabel(names=names), "img": datasets.Image()}),
    )
    out = standardise(split, "someone/brain-mri")
    assert list(out.features) == ["image", "label"] and out.features["label"].names == list(CLASS_NAMES)
    assert [CLASS_NAMES[y] for y in out["label"]] == [names[y] for y in split["tumour"]]


def test_unknown_classes_are_named():
    import datasets

    split = datasets.Dataset.from_dict(
        {"label": [0], "image": [{"bytes": b"", "path": "0.jpg"}]},
        features=datasets.Features({"label": datasets.ClassLabel(names=["astrocytoma"]), "image": datasets.Image()}),
    )
    with pytest.raises(DataError, match=r"unknown classes \['astrocytoma'\]"):
        standardise(split, "someone/brain-mri")


def test_near_duplicate_threshold_separates_copies_from_distinct_images(tiny_data):
    root, _ = tiny_data
    a = Image.open(root / "Testing" / "glioma" / "Te-gl_0000.jpg")
    b = Image.open(root / "Testing" / "glioma" / "Te-gl_0001.jpg")
    resized = a.resize((128, 128), Image.Resampling.BICUBIC)  # an upscaled copy
    md5 = ["a", "b", "c"]
    exact, near = duplicate_groups(md5, np.stack([thumbnail(a), thumbnail(b), thumbnail(resized)]))
    assert len(set(exact)) == 3
    assert near[0] == near[2] != near[1]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: shutil.rmtree(r / "Training" / "pituitary"), "missing pituitary"),
    (lambda r: (r / "Testing" / "astrocytoma").mkdir(), "unknown astrocytoma"),
    (lambda r: shutil.rmtree(r / "Testing"), "missing folder Testing"),
])
def test_layout_errors_name_what_was_expected(tmp_path, mutate, message):
    root = tmp_path / "d"
    make_tiny_dataset(root)
    mutate(root)
    with pytest.raises(DataError, match=message) as e:
        check_kaggle_layout(root)
    assert "glioma, meningioma, notumor, pituitary" in str(e.value)


def test_empty_split_is_a_clear_error(tmp_path):
    root = tmp_path / "d"
    make_tiny_dataset(root)
    for c in CLASS_NAMES:
        for f in (root / "Testing" / c).iterdir():
            f.unlink()
    with pytest.raises(DataError, match="test split .* holds no images"):
        prepare_data(str(root), CFG, progress=False)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="No such data folder"):
        prepare_data(str(tmp_path / "nope"), CFG, progress=False)


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Cannot load the Hub dataset 'someone/brain-mri'.*local folder"):
        prepare_data("someone/brain-mri", CFG, progress=False)

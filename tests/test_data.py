import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from brain_mri.config import CLASS_NAMES
from brain_mri.data import (
    BatchAugment, DataError, check_kaggle_layout, duplicate_groups, prepare_data, thumbnail, to_pil_rgb,
)
from conftest import N_TEST, N_TRAIN, make_tiny_dataset

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


@pytest.mark.parametrize("make", [
    lambda: Image.new("L", (40, 30), 100),
    lambda: Image.new("RGBA", (40, 30), (10, 20, 30, 128)),
    lambda: Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16)),
    lambda: np.random.default_rng(0).integers(0, 4096, (30, 40)).astype(np.uint16),
    lambda: np.random.default_rng(0).random((30, 40, 3)).astype(np.float32),
    lambda: np.zeros((30, 40, 4), np.uint8),
])
def test_to_pil_rgb_any_mode(make):
    im = to_pil_rgb(make())
    assert im.mode == "RGB" and im.size == (40, 30)


def test_sixteen_bit_uses_full_range():
    arr = np.linspace(0, 4095, 30 * 40).reshape(30, 40).astype(np.uint16)  # 12-bit data in 16-bit
    out = np.asarray(to_pil_rgb(arr))
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 4, 5, 6)), "Expected an image array"),
    ("does/not/exist.png", "No such image file"),
    (b"not an image", "Cannot read"),
    (42, "Expected a file path"),
])
def test_to_pil_rgb_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        to_pil_rgb(bad)


def test_batch_augment_keeps_shape_range_and_varies():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    aug = BatchAugment()
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert not torch.equal(a, b)
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(0)))


def test_mixup_gives_soft_targets_and_leaves_odd_batches_alone():
    from brain_mri.engine import make_mixup, mix_batch

    assert make_mixup(0.0, 0.0, 4) is None
    with pytest.raises(ValueError, match="alpha >= 0"):
        make_mixup(-0.2, 0.0, 4)
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, targets = mix_batch(make_mixup(1.0, 0.0, 4), x.clone(), y)
    assert targets.shape == (6, 4) and torch.allclose(targets.sum(1), torch.ones(6))
    assert (targets.max(1).values < 1).any()  # labels of two images blended
    assert not torch.equal(mixed, x)
    odd_x, odd_y = mix_batch(make_mixup(1.0, 0.0, 4), x[:5].clone(), y[:5])
    assert torch.equal(odd_x, x[:5]) and torch.equal(odd_y, y[:5])


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Cannot load the Hub dataset 'someone/brain-mri'.*local folder"):
        prepare_data("someone/brain-mri", CFG, progress=False)

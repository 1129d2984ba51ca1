"""MRI augmentations (brain_mri/training/mri_augment.py) on real example slices: each step does what it says, the
whole keeps a grey uint8 slice of the same size, and a seed gives the same result."""
import numpy as np
import pytest
import torch
from volume_files import example_slices

from brain_mri.training.mri_augment import PRESETS, MRIAugment, from_preset, head_mask, invert_inside, jpeg, remap, strip_skull


@pytest.fixture(scope="module")
def grey():
    return example_slices(["glioma_axial.jpg"], 160)[0].astype(np.float64) / 255.0


def _tensor(grey) -> torch.Tensor:
    g = torch.from_numpy(np.round(grey * 255).astype(np.uint8))
    return g.expand(3, *g.shape).clone()


def test_skull_stripping_keeps_the_brain_and_darkens_the_ring(grey):
    head = head_mask(grey)
    torch.manual_seed(0)
    stripped = strip_skull(grey, head)
    ring = head & (stripped == 0)
    assert 0.05 < ring.sum() / head.sum() < 0.6  # a ring of the head went dark
    centre = (slice(60, 100), slice(60, 100))
    assert np.array_equal(stripped[centre], grey[centre])  # the brain is untouched
    assert (stripped[~head] <= grey[~head]).all()


def test_inversion_swaps_bright_and_dark_inside_the_head_only(grey):
    head = head_mask(grey)
    inverted = invert_inside(grey, head)
    assert (inverted[~head] == 0).all()
    assert np.corrcoef(inverted[head], grey[head])[0, 1] < -0.9


def test_remaps_keep_black_and_the_order_of_tissues_when_monotonic(grey):
    torch.manual_seed(1)
    curved = remap(grey, monotonic=True)
    assert curved[grey == 0].max() == 0 and 0.5 < curved.max() <= 1.0
    order = np.argsort(grey.ravel(), kind="stable")
    assert (np.diff(curved.ravel()[order]) >= -1e-12).all()  # never reverses two tissues
    torch.manual_seed(3)
    shuffled = remap(grey, monotonic=False)
    assert (np.diff(shuffled.ravel()[order]) < -1e-3).any()  # may reverse them


def test_jpeg_reencoding_is_close_but_not_equal(grey):
    again = jpeg(grey, 40)
    assert again.shape == grey.shape and 0 < np.abs(again - grey).mean() < 0.03


@pytest.mark.parametrize("step", [k for k in PRESETS["mri"]])
def test_every_step_of_the_preset_changes_the_slice_and_keeps_its_form(grey, step):
    augment = MRIAugment({step: 1.0})
    torch.manual_seed(4)
    out = augment(_tensor(grey))
    assert out.shape == (3, 160, 160) and out.dtype == torch.uint8
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # grey, as MRI is
    assert (out[0].float() - _tensor(grey)[0].float()).abs().mean() > 0.2, step


def test_the_preset_is_seeded_and_none_is_no_augmentation(grey):
    augment = from_preset("mri")
    torch.manual_seed(5)
    first = [augment(_tensor(grey)) for _ in range(4)]
    torch.manual_seed(5)
    again = [augment(_tensor(grey)) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert from_preset("none") is None
    assert torch.equal(MRIAugment({})(_tensor(grey)), _tensor(grey))


def test_training_with_the_preset_records_it(tiny_data, tmp_path):
    import json

    from conftest import TINY_ARGS, run_train

    root, _ = tiny_data
    out = tmp_path / "model"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS, "--mri-augment", "mri")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "training_args.json").read_text())["mri_augment"] == "mri"
    card = (out / "README.md").read_text()
    assert "`--mri-augment mri`" in card and "skull strip 0.25" in card and "jpeg 0.2" in card
    # the "not a brain MRI" detector was fitted on two augmented copies of the training slices beside them
    metrics = json.loads((out / "metrics.json").read_text())
    ood = metrics["ood"]
    assert ood["augmented"]["copies"] == 2 and ood["fitted_on"] == 3 * metrics["split_sizes"]["train"]
    assert 0 <= ood["augmented"]["validation_flagged"] <= 1 and "2 copies through the MRI augmentations" in card


def test_an_augmented_copy_is_seeded_and_leaves_the_split_and_the_random_state_alone(tiny_data):
    from brain_mri.training.data import prepare_data
    from brain_mri.training.mri_augment import augmented_copy

    split = prepare_data(tiny_data[0], {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3},
                         progress=False).val
    before = split.images.copy()
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a, b = (augmented_copy(split, from_preset("mri"), seed=3) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), state) and np.array_equal(split.images, before)
    assert np.array_equal(a.images, b.images) and a.images.shape == before.shape and a.images.dtype == np.uint8
    assert not np.array_equal(a.images, before) and not np.array_equal(a.images, augmented_copy(split, from_preset("mri"), 4).images)
    assert np.array_equal(a.labels, split.labels) and a.names == split.names

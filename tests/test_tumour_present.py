"""Slices known only to hold a tumour (--tumour-present): loading with near-twins kept on one side, seeded batches,
the partial-label loss, and a whole run that records them."""
import json

import numpy as np
import pytest
import torch
from conftest import TINY_ARGS, run_train, synthetic_slice
from PIL import Image

from brain_mri.config import CLASS_NAMES
from brain_mri.training.tumour_present import TUMOUR, TumourBatches, load_tumour_present, tumour_present_loss


@pytest.fixture(scope="module")
def tumour_folder(tmp_path_factory):
    """30 synthetic tumour slices (glioma-, meningioma- and pituitary-like), each with a near-twin (re-encoded
    at another size, as the Br35H slices have), and one file that is no image."""
    folder = tmp_path_factory.mktemp("tumours")
    rng = np.random.default_rng(7)
    for i in range(30):
        image = synthetic_slice(rng, [0, 1, 3][i % 3])
        image.save(folder / f"y{i}.jpg", quality=95)
        image.resize((80, 80), Image.Resampling.BILINEAR).save(folder / f"y{i}_twin.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    return folder


def test_the_partial_label_loss_is_minus_the_log_of_the_tumour_probability():
    logits = torch.tensor([[4.0, 3.0, -2.0, 1.0], [-3.0, -3.0, 5.0, -3.0]])
    p = logits.softmax(1)
    expected = -torch.log(p[:, TUMOUR].sum(1)).mean()
    assert torch.allclose(tumour_present_loss(logits), expected)
    assert tumour_present_loss(logits[:1]) < 0.05 < tumour_present_loss(logits[1:])  # which tumour does not matter
    assert CLASS_NAMES[2] == "notumor" and 2 not in TUMOUR


def test_loading_keeps_near_twins_on_one_side(tumour_folder):
    data_config = {"input_size": (3, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
                   "mean": (0.5,) * 3, "std": (0.5,) * 3}
    train, held, skipped = load_tumour_present(str(tumour_folder), data_config, 0.2, seed=0, progress=False)
    assert len(train) + len(held) == 60 and [n for n, _ in skipped] == ["tumour-present/broken.jpg"]
    assert 8 <= len(held) <= 16 and (train.labels == -1).all() and (held.labels == -1).all()
    stem = {n.split("/")[-1].split(".")[0].replace("_twin", "") for n in held.names}
    assert not stem & {n.split("/")[-1].split(".")[0].replace("_twin", "") for n in train.names}
    with pytest.raises(ValueError, match="no such folder, or no image"):
        load_tumour_present(str(tumour_folder / "nothing"), data_config, 0.2, 0, progress=False)


def test_batches_are_seeded_by_epoch_and_process(tumour_folder):
    data_config = {"input_size": (3, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
                   "mean": (0.5,) * 3, "std": (0.5,) * 3}
    train, _, _ = load_tumour_present(str(tumour_folder), data_config, 0.2, seed=0, progress=False)
    batches = TumourBatches(train, 5, 0.5, seed=3)
    first = [next(batches.epoch(1)) for _ in range(2)]
    stream = batches.epoch(1)
    again = [next(stream) for _ in range(40)]  # endless: more batches than an epoch of them
    assert torch.equal(first[0], again[0]) and first[0].shape == (5, 3, 32, 32) and first[0].dtype == torch.uint8
    assert not torch.equal(next(batches.epoch(2)), first[0]) and not torch.equal(next(batches.epoch(1, 1)), first[0])


def test_a_run_with_tumour_present_slices_records_them(tiny_data, tumour_folder, tmp_path):
    root, _ = tiny_data
    out = tmp_path / "model"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS, "--box-loss", "1",
                  "--tumour-present", tumour_folder, "--tumour-present-batch", "4", "--mri-augment", "mri")
    assert r.returncode == 0, r.stderr[-3000:]
    facts = json.loads((out / "metrics.json").read_text())["tumour_present"]
    assert facts["train"] + facts["held_out"] == 60 and facts["per_batch"] == 4 and facts["weight"] == 0.5
    assert 0.0 <= facts["held_out_called_tumour"] <= 1.0
    assert json.loads((out / "training_args.json").read_text())["tumour_present"] == str(tumour_folder)
    card = (out / "README.md").read_text()
    assert f"slices known only to hold a tumour (`--tumour-present {tumour_folder.name}`)" in card
    assert f"Of {facts['held_out']} more held out" in card

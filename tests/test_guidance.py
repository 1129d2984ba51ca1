"""Box-guided training: boxes into the model's view, masks that follow augmentation, the loss."""
import numpy as np
import pytest
import torch

from brain_mri.training.guidance import evidence_outside, guide_masks, view_boxes
from brain_mri.transforms import BatchAugment
from conftest import TINY_ARGS, run_train


def test_boxes_follow_the_view_region():
    boxes = {"Training/glioma/a.jpg": (100.0, 50.0, 140.0, 90.0, 224.0, 224.0)}
    regions = np.array([[20, 0, 220, 200], [0, 0, 224, 224]], np.float32)  # a head crop, then the whole image
    out = view_boxes(["glioma/a.jpg", "glioma/b.jpg"], regions, 100, boxes, "Training")
    np.testing.assert_allclose(out[0], [40, 25, 60, 45])
    assert np.isnan(out[1]).all()


def test_masks_box_head_and_unguided():
    images = torch.zeros(3, 3, 10, 10, dtype=torch.uint8)
    images[:, :, 2:8, 2:8] = 100  # a "head"
    boxes = torch.tensor([[1.0, 1.0, 4.0, 3.0], [float("nan")] * 4, [float("nan")] * 4])
    masks, weights = guide_masks(images, torch.tensor([0, 2, 1]), boxes)  # glioma boxed, no tumour, meningioma unboxed
    assert weights.tolist() == [1.0, 1.0, 0.0]
    assert masks[0, 0].sum() == 3 * 2 and masks[0, 0, 1:3, 1:4].all()
    from brain_mri.evaluation.localise import head_mask

    assert torch.equal(masks[1, 0].bool(), torch.from_numpy(head_mask(images[1].permute(1, 2, 0).numpy())))
    assert not masks[2].any()


def test_masks_follow_the_augmentation():
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    images[:, :, 8:14, 20:26] = 255
    masks = (images[:, :1] > 0).float()
    aug = BatchAugment(brightness=0, contrast=0)
    out, moved = aug(images, torch.Generator().manual_seed(3), masks)
    assert torch.equal(out, aug(images, torch.Generator().manual_seed(3)))  # the same draws with or without masks
    bright, inside = out[:, 0] > 127, moved[:, 0] > 0.5
    assert (bright == inside).float().mean() > 0.97  # the mask moved with the image


def _head():
    head = torch.nn.Linear(2, 4)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 0] = 1.0  # class 0's evidence is channel 0
        head.bias.zero_()
    return head


def test_evidence_outside_the_box():
    features = torch.zeros(2, 2, 5, 5)
    features[0, 0, 1, 1] = 10.0  # in the box
    features[1, 0, 4, 4] = 10.0  # far outside
    masks = torch.zeros(2, 1, 50, 50)
    masks[:, :, 5:25, 5:25] = 1  # the box covers cell (1, 1) and parts of its neighbours
    weights = torch.ones(2)
    labels = torch.zeros(2, dtype=torch.long)
    inside_loss = evidence_outside(features[:1], _head(), labels[:1], masks[:1], weights[:1])
    outside_loss = evidence_outside(features[1:], _head(), labels[1:], masks[1:], weights[1:])
    assert inside_loss < 0.01 and outside_loss > 0.99
    # pushing every cell's evidence down changes nothing: no empty-map escape
    head = _head()
    with torch.no_grad():
        head.bias[0] = -100.0
    pushed_down = evidence_outside(features[:1], head, labels[:1], masks[:1], weights[:1])
    assert pushed_down.item() == pytest.approx(inside_loss.item())
    feats = features.clone().requires_grad_(True)
    evidence_outside(feats, _head(), labels, masks, weights).backward()
    assert feats.grad.abs().sum() > 0


def test_box_loss_trains_and_refuses_what_it_cannot_guide(tiny_data, tmp_path):
    root, _ = tiny_data
    r = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "guided", *TINY_ARGS, "--box-loss", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "boxed training images" in r.stderr and (tmp_path / "guided" / "model.safetensors").is_file()
    r = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "mixed", *TINY_ARGS, "--box-loss", "1",
                  "--mixup", "0.2")
    assert r.returncode == 2 and "cannot be combined with --mixup" in r.stderr and "Traceback" not in r.stderr
    r = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "convnext", *TINY_ARGS, "--box-loss", "1",
                  "--model", "test_convnext")
    assert r.returncode == 2 and "global average pooling" in r.stderr and "decode" not in r.stderr
    r = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "negative", *TINY_ARGS, "--box-loss", "-1")
    assert r.returncode == 2 and "weight >= 0" in r.stderr

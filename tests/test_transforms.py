"""Batch augmentation, mixup, and the training precision."""
import pytest
import torch

from brain_mri.transforms import BatchAugment, make_mixup, mix_batch


def test_batch_augment_keeps_shape_range_and_varies():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    aug = BatchAugment()
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert not torch.equal(a, b)
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(0)))


def test_mixup_gives_soft_targets_and_leaves_odd_batches_alone():
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


def test_auto_precision_follows_the_cpus_native_bf16():
    from pathlib import Path

    from brain_mri.training.engine import resolve_mixed_precision

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert resolve_mixed_precision("auto", cpu=True) == ("bf16" if native else "no")
    assert resolve_mixed_precision("no", cpu=True) == "no" and resolve_mixed_precision("bf16", cpu=True) == "bf16"


def _head_on_black(size=(300, 200), centre=(200, 90), radius=40):
    import numpy as np
    from PIL import Image

    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    head = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) < radius ** 2
    image = np.where(head, 150, 0).astype(np.uint8)
    image[5:8, 5:60] = 255  # a text label in the corner is not head
    return Image.fromarray(image).convert("RGB")


def test_head_box_is_a_square_around_the_largest_bright_component():
    from PIL import Image

    from brain_mri.transforms import crop_to_head, head_box

    image = _head_on_black()
    x0, y0, x1, y1 = head_box(image, margin=0.05)
    assert x1 - x0 == y1 - y0 and abs((x1 - x0) - 80 * 1.1) <= 2  # found on a <= 256-px copy: a pixel or two
    assert abs((x0 + x1) / 2 - 200) <= 1.5 and abs((y0 + y1) / 2 - 90) <= 1.5
    crop = crop_to_head(image, margin=0.25)  # reaches past the top and the right: padded with black
    assert crop.size[0] == crop.size[1] and abs(crop.size[0] - 120) <= 2 and crop.getpixel((0, 0)) == (0, 0, 0)
    assert head_box(Image.new("RGB", (300, 200))) == (0, -50, 300, 250)  # nothing bright: the whole image


def test_head_crop_runs_before_timms_transform():
    import numpy as np

    from brain_mri.transforms import HEAD_CROP, crop_to_head, head_box, split_eval_transform, view_region

    cfg = {"input_size": (3, 64, 64), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
           "crop_pct": 1.0, "crop_mode": "center"}
    image = _head_on_black()
    cropped, _ = split_eval_transform({**cfg, "head_crop": HEAD_CROP})
    plain, _ = split_eval_transform(cfg)
    np.testing.assert_array_equal(np.asarray(cropped(image)), np.asarray(plain(crop_to_head(image))))
    assert view_region(image, {**cfg, "head_crop": HEAD_CROP}) == pytest.approx(head_box(image))


def test_eval_view_is_the_geometric_transform_and_its_region():
    import numpy as np

    from brain_mri.transforms import HEAD_CROP, EvalView, split_eval_transform, view_region

    image = _head_on_black()
    for cfg in ({"input_size": (3, 48, 48), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
                 "crop_pct": 0.875, "crop_mode": "center"},
                {"input_size": (3, 64, 64), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3,
                 "crop_pct": 1.0, "crop_mode": "center", "head_crop": HEAD_CROP}):
        view, region = EvalView(cfg)(image)
        np.testing.assert_array_equal(np.asarray(view), np.asarray(split_eval_transform(cfg)[0](image)))
        assert region == view_region(image, cfg)

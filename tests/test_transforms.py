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

    from brain_mri.engine import resolve_mixed_precision

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert resolve_mixed_precision("auto", cpu=True) == ("bf16" if native else "no")
    assert resolve_mixed_precision("no", cpu=True) == "no" and resolve_mixed_precision("bf16", cpu=True) == "bf16"

"""Any image input -> 8-bit RGB, and clear errors for what is not an image."""
import numpy as np
import pytest
from PIL import Image

from brain_mri.io.images import to_pil_rgb


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

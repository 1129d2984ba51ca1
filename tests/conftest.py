"""Fixtures: a tiny dataset in the Kaggle layout (made here, never real MRI) and a trained tiny model."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# The real Kaggle data: BRAIN_MRI_DATA, else the shared folder beside the checkout.
SHARED_DATA = Path(os.environ.get("BRAIN_MRI_DATA", ROOT.parent / "shared" / "data" / "brain-tumor-mri"))
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
N_TRAIN, N_TEST = 10, 3
TINY_ARGS = ["--model", "test_resnet", "--image-size", "32", "--batch-size", "8", "--mixed-precision", "no",
             "--workers", "0", "--cpu"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network


def synthetic_slice(rng, cls: int, size: int = 64, centre: list | None = None) -> Image.Image:
    """A grey 'head' disc with a class-dependent bright blob and noise: distinct per call.
    ``centre`` receives the blob's centre (fractions of the size)."""
    yy, xx = np.mgrid[:size, :size] / size
    img = 60 * (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.16)
    cx, cy = [(0.35, 0.35), (0.65, 0.35), (0.5, 0.5), (0.5, 0.68)][cls]
    cx, cy = cx + rng.uniform(-0.05, 0.05), cy + rng.uniform(-0.05, 0.05)
    if centre is not None:
        centre[:] = [cx, cy]
    if cls != 2:
        img = img + 150 * (((xx - cx) ** 2 + (yy - cy) ** 2) < 0.01)
    img = img + rng.normal(0, 35, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


def make_tiny_dataset(root: Path, seed: int = 0) -> dict:
    """Writes the Kaggle layout with a corrupt file, an exact and a resized copy of test images
    in Training, and an exact copy inside Training. Returns what was planted."""
    rng = np.random.default_rng(seed)
    boxes = ["file,label,x_min,y_min,x_max,y_max,width,height,figshare_index"]
    for split, n in (("Training", N_TRAIN), ("Testing", N_TEST)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                centre = []
                im = synthetic_slice(rng, c, centre=centre)
                file = f"{split}/{name}/{split[:2]}-{name[:2]}_{i:04d}.jpg"
                (im.convert("RGB") if i % 2 else im).save(root / file, quality=95)
                if name != "notumor":  # the blob, as tumour_boxes.csv gives it for the real data
                    x0, y0, x1, y1 = (64 * (v + d) for v, d in zip(centre * 2, (-0.1, -0.1, 0.1, 0.1)))
                    boxes.append(f"{file},{name},{x0:.1f},{y0:.1f},{x1:.1f},{y1:.1f},64,64,{len(boxes)}")
    (root / "tumour_boxes.csv").write_text("\n".join(boxes) + "\n")
    train, test = root / "Training", root / "Testing"
    (train / "glioma" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    exact_src = test / "meningioma" / "Te-me_0000.jpg"
    (train / "meningioma" / "copy_of_test.jpg").write_bytes(exact_src.read_bytes())
    resized_src = test / "pituitary" / "Te-pi_0000.jpg"
    buf = io.BytesIO()
    Image.open(resized_src).resize((48, 48), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=80)
    (train / "pituitary" / "resized_copy_of_test.jpg").write_bytes(buf.getvalue())
    (train / "notumor" / "Tr-no_copy.jpg").write_bytes((train / "notumor" / "Tr-no_0000.jpg").read_bytes())
    return {"corrupt": "train/glioma/corrupt.jpg", "train_readable": 4 * N_TRAIN + 3, "test_total": 4 * N_TEST,
            "copied_test": ["meningioma/Te-me_0000.jpg", "pituitary/Te-pi_0000.jpg"]}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "brain-tumor-mri"
    planted = make_tiny_dataset(root)
    return root, planted


def run_cli(*args, env=None, timeout=300):
    """``python -m brain_mri ARGS`` in a subprocess, output captured as text, ``env`` added to ours."""
    return subprocess.run([sys.executable, "-m", "brain_mri", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def run_train(*args, env=None, timeout=300, launcher=None):
    cmd = (launcher or [sys.executable]) + [str(ROOT / "train.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def trained_folder(tiny_data, tmp_path_factory):
    """A one-epoch run of a tiny timm model on the tiny dataset."""
    out = tmp_path_factory.mktemp("run") / "model"
    root, _ = tiny_data
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


@pytest.fixture(scope="session")
def answering_folder(trained_folder, tmp_path_factory):
    """The tiny model without its out-of-distribution detector. One epoch on a few dozen images
    leaves features that mean little, so its detector flags slices too; the app, batch and browser
    tests need answers to check their plumbing (test_ood checks the detectors)."""
    import shutil

    out = tmp_path_factory.mktemp("answering") / "model"
    shutil.copytree(trained_folder[0], out, ignore=shutil.ignore_patterns("ood.safetensors", "checkpoints"))
    return out, trained_folder[1]


@pytest.fixture(scope="session")
def cropped_folder(tiny_data, tmp_path_factory):
    """The same run with --head-crop and a two-layer CAM."""
    out = tmp_path_factory.mktemp("run") / "cropped"
    root, _ = tiny_data
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS, "--head-crop",
                  "--cam-layer", "layer3.-1,layer4.-1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


@pytest.fixture(scope="session")
def evaluated(trained_folder, tiny_data, tmp_path_factory):
    """``python -m brain_mri evaluate`` of the tiny model on the tiny data: (stdout, the --output JSON)."""
    out, _ = trained_folder
    root, _ = tiny_data
    metrics = tmp_path_factory.mktemp("evaluate") / "m.json"
    r = run_cli("evaluate", "--model", out, "--data", root, "--output", metrics)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, json.loads(metrics.read_text())


@pytest.fixture
def sample_image(tiny_data):
    root, _ = tiny_data
    return root / "Testing" / "glioma" / "Te-gl_0001.jpg"


requires_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")


BUNDLED_MODEL = ROOT / "model"


requires_bundled_model = pytest.mark.skipif(not (BUNDLED_MODEL / "config.json").is_file(),
                                            reason="no bundled model in ./model")

#!/usr/bin/env python
"""How often the "not a brain MRI" check flags images that are not brain MRI, and real slices.

    python benchmarks/ood.py [--model model] [--data ../shared/data/brain-tumor-mri]

Not brain MRI, all from packages' bundled sample data or synthesis (never a download):
- every image scikit-image ships in its wheel (``skimage.data``; its brain MRI excluded);
- synthetic images (noise, gradients, shapes, constant);
- greyscale photographs (scikit-image's, matplotlib's Grace Hopper) and the same inverted;
- logos and drawings on black; rendered text and scanned documents;
- other body parts and modalities: every DICOM file pydicom ships that is not MR (CT, US, CR, NM, ...;
  files it refuses are counted apart), its abdominal MR, a retina, terrain models.

Real slices: the leak-free Testing images (no copy in Training), read from their files as a user would
upload them. Reported apart: brain MRI unlike the training slices (matplotlib's sagittal head MRI, pydicom's
small MR, Testing slices skull-stripped or inverted inside the head), with what the model answers.
The flag is the app's: a DICOM header that names another modality or body part, the colour / blank checks,
then the detector (``ood.safetensors``); the table counts the header's flags apart.
"""
import argparse
import time
import warnings
from pathlib import Path

import numpy as np

SKIMAGE_SKIP = {"brain", "cells3d", "kidney", "lily", "skin", "lfw_subset", "eagle", "vortex", "stereo_motorcycle",
                "nickel_solidification", "protein_transport", "mitosis", "human_mitosis", "palisades_of_vogt"}


def skimage_images():
    """(name, array) of the images shipped inside scikit-image's wheel (no download), brain MRI excluded."""
    import skimage.data as data

    for name in sorted(data.__all__):
        if name in SKIMAGE_SKIP or name in ("download_all", "data_dir", "lbp_frontal_face_cascade_filename"):
            continue
        try:
            yield name, getattr(data, name)()
        except Exception:  # needs a download (pooch) or an optional package: not shipped
            continue


def pydicom_files():
    """Paths of pydicom's bundled test files whose modality is not MR."""
    import pydicom
    import pydicom.data

    # the folder inside the wheel: get_testdata_files() would also try to download more
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm")):
        try:
            if getattr(pydicom.dcmread(path, stop_before_pixels=True), "Modality", "") != "MR":
                yield path
        except Exception:
            continue


def synthetic_images(seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-128:128, -128:128]
    radius = np.hypot(yy, xx)
    yield "colour noise", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    yield "grey noise", rng.integers(0, 256, (256, 256), dtype=np.uint8)
    yield "noise in a dark frame", np.where(radius < 100, rng.integers(0, 256, (256, 256)), 0).astype(np.uint8)
    yield "horizontal gradient", np.tile(np.linspace(0, 255, 256), (256, 1)).astype(np.uint8)
    yield "radial gradient", np.clip(255 - radius * 2, 0, 255).astype(np.uint8)
    yield "bright disc", ((radius < 90) * 200).astype(np.uint8)
    yield "ring", (((radius > 80) & (radius < 100)) * 255).astype(np.uint8)
    yield "checkerboard", (((yy // 32 + xx // 32) % 2) * 255).astype(np.uint8)
    yield "text-like stripes", ((np.sin(yy / 3.0) > 0.6) * 255).astype(np.uint8)
    yield "black", np.zeros((256, 256), np.uint8)
    yield "white", np.full((256, 256), 255, np.uint8)
    yield "mid grey", np.full((256, 256), 128, np.uint8)


PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "moon", "coins", "clock", "immunohistochemistry",
          "hubble_deep_field", "colorwheel", "brick", "grass", "gravel", "cat", "motorcycle_left")


def photographs(grey_originals: bool = True):
    """(name, greyscale array) of the photographs scikit-image and matplotlib ship; without
    ``grey_originals``, only those made grey here (the grey ones are already in :func:`skimage_images`)."""
    import skimage.data as data
    from matplotlib import cbook
    from PIL import Image

    for name in PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception:  # not shipped in this version
            continue
        if image.ndim == 3 or grey_originals:
            yield name, np.asarray(Image.fromarray(image).convert("L"))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        yield "grace_hopper", np.asarray(Image.open(f).convert("L"))


def inverted(named):
    for name, image in named:
        yield f"{name} (inverted)", 255 - image


def drawings(n: int = 16, seed: int = 0):
    """Logos and line drawings on black: the packages' logos, a silhouette, and random shapes drawn with PIL."""
    import matplotlib
    import skimage.data as data
    from PIL import Image, ImageDraw

    def on_black(rgba):
        rgba = rgba.astype(np.float32)
        return (rgba[..., :3].mean(-1) * rgba[..., 3] / 255).astype(np.uint8)

    yield "scikit-image logo on black", on_black(data.logo())
    mpl_logo = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "logo2.png").convert("RGBA"))
    yield "matplotlib logo on black", on_black(mpl_logo)
    yield "horse silhouette", (data.horse() == 0).astype(np.uint8) * 255
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = Image.new("L", (256, 256))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = rng.integers(10, 180, 2)
            w, h = rng.integers(30, 120, 2)
            box, grey, width = [int(x0), int(y0), int(x0 + w), int(y0 + h)], int(rng.integers(120, 256)), int(rng.integers(2, 8))
            kind = i % 4
            if kind == 0:
                draw.ellipse(box, outline=grey, width=width)
            elif kind == 1:
                draw.rectangle(box, fill=grey)
            elif kind == 2:
                draw.line(box, fill=grey, width=width)
            else:
                draw.polygon([(int(x), int(y)) for x, y in rng.integers(10, 246, (5, 2))], fill=grey)
        yield f"drawing {i + 1}", np.asarray(image)


def documents(n: int = 8, seed: int = 0):
    """Rendered text: scikit-image's scanned page inverted, and paragraphs drawn with PIL."""
    import skimage.data as data
    from PIL import Image, ImageDraw, ImageFont

    # scikit-image's text and page as they are: already in skimage_images()
    yield "scikit-image page (inverted)", 255 - data.page()
    rng = np.random.default_rng(seed)
    words = "the patient scan report brain tumour slice image model result page text section figure".split()
    for i in range(n):
        light = i % 2 == 0
        image = Image.new("L", (320, 320), 255 if light else 0)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=int(rng.integers(12, 28)))
        for row in range(20, 300, int(font.size * 1.6)):
            draw.text((16, row), " ".join(rng.choice(words, 6)), fill=0 if light else 255, font=font)
        yield f"paragraph {i + 1} ({'dark on light' if light else 'light on dark'})", np.asarray(image)


def other_modalities():
    """Other body parts and modalities: pydicom's files that are not MR, and its MR of the abdomen;
    matplotlib's terrain models; scikit-image's retina (greyscale; its microaneurysms are in skimage_images())."""
    import pydicom
    import skimage.data as data
    from PIL import Image

    for path in pydicom_files():
        yield path.name, path
    yield "abdomen MR (pydicom examples_overlay.dcm)", Path(pydicom.data.__file__).parent / "test_files" / "examples_overlay.dcm"
    yield "retina (greyscale)", np.asarray(Image.fromarray(data.retina()).convert("L"))
    from matplotlib import cbook

    for name, key in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        with np.load(cbook.get_sample_data(name, asfileobj=False)) as z:
            grid = z[key].astype(np.float32)
        yield f"terrain {name}", ((grid - grid.min()) / (np.ptp(grid) or 1) * 255).astype(np.uint8)


def unlike_training(testing: list, n: int = 20):
    """Brain MRI unlike the training slices: matplotlib's sagittal head MRI, pydicom's small MR slice,
    and ``n`` of the leak-free Testing slices (``(name, path)`` pairs) skull-stripped (the head's inner part
    kept) or inverted inside the head (a T2-like contrast)."""
    import gzip

    import pydicom
    from matplotlib import cbook
    from PIL import Image

    with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:
        head = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float32)
    yield "matplotlib sagittal head MRI", (head / head.max() * 255).astype(np.uint8)
    yield "pydicom MR_small.dcm", Path(pydicom.data.__file__).parent / "test_files" / "MR_small.dcm"
    if not testing:
        return
    from scipy import ndimage

    from brain_mri.evaluation.localise import head_mask

    for name, path in testing[:: 10][:n]:
        grey = np.asarray(Image.open(path).convert("L"))
        head = head_mask(np.repeat(grey[..., None], 3, -1))
        brain = ndimage.binary_erosion(head, iterations=max(3, grey.shape[0] // 25))
        yield f"{name} skull-stripped", np.where(brain, grey, 0).astype(np.uint8)
        yield f"{name} inverted inside the head", np.where(head, 255 - grey, 0).astype(np.uint8)


def flag_rate(clf, named):
    """(n, flagged, refused, unflagged names, predicted classes of the unflagged, flagged by a DICOM header alone):
    ``named`` yields (name, image or path)."""
    from brain_mri.io.images import to_pil_rgb
    from brain_mri.serving.quality import header_warning

    n = flagged = by_header = 0
    refused, missed, answers = [], [], []
    for name, image in named:
        try:
            rgb = to_pil_rgb(image)  # a DICOM file's header travels in rgb.info
            a = clf.assess([rgb])[0]
        except ValueError:
            refused.append(name)
            continue
        n += 1
        flagged += a["warning"] is not None
        by_header += header_warning(rgb.info) is not None
        if a["warning"] is None:
            missed.append(f"{name} ({a['ood_score']:.1f})")
            answers.append(max(a["probabilities"], key=a["probabilities"].get))
    return n, flagged, refused, missed, answers, by_header


def leak_free_testing(data: str, data_config: dict):
    """(file name, path) of the leak-free Testing slices (the duplicate audit decodes them in the model's view)."""

    from brain_mri.training.data import prepare_data

    bundle = prepare_data(data, data_config, with_val=False, drop_leaks=False, train_views=False, progress=False)
    for name, free in zip(bundle.test.names, bundle.test_leak_free):
        if free:
            yield name, Path(data) / "Testing" / name


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model")
    p.add_argument("--data", default="../shared/data/brain-tumor-mri", help="dataset (Kaggle layout); '' to skip")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from brain_mri import BrainMRIClassifier

    clf = BrainMRIClassifier.from_pretrained(args.model)
    data = args.data if args.data and Path(args.data).is_dir() else None
    print(f"detector: {'none' if clf.ood is None else clf.ood.describe()}\n")
    sets = {"scikit-image data": skimage_images(), "synthetic": synthetic_images(),
            "photographs, made grey": photographs(grey_originals=False),
            "photographs, greyscale, inverted": inverted(photographs()),
            "drawings and logos on black": drawings(), "rendered text and documents": documents(),
            "other body parts and modalities": other_modalities()}
    print("| set | images | flagged | share | of them by a DICOM header | refused as unreadable | not flagged |\n"
          "|---|---:|---:|---:|---:|---:|---|")
    total = np.zeros(4, dtype=int)
    for name, named in sets.items():
        n, flagged, refused, missed, _, by_header = flag_rate(clf, named)
        total += (n, flagged, by_header, len(refused))
        shown = ", ".join(missed[:6]) + (f" … (+{len(missed) - 6})" if len(missed) > 6 else "")
        print(f"| {name} | {n} | {flagged} | {flagged / max(n, 1):.1%} | {by_header} | {len(refused)} | {shown} |")
    print(f"| **all not brain MRI** | {total[0]} | {total[1]} | **{total[1] / max(total[0], 1):.1%}** | {total[2]} | "
          f"{total[3]} | |")
    free = []  # the leak-free Testing slices: prepared once (decoding and the duplicate audit), used twice
    if data:
        start = time.perf_counter()
        free = list(leak_free_testing(data, clf.data_config))
        n, flagged, _, _, _, _ = flag_rate(clf, free)
        print(f"| leak-free Testing (brain MRI) | {n} | {flagged} | **{flagged / max(n, 1):.1%}** | | | "
              f"{n - flagged} answered ({time.perf_counter() - start:.0f} s) |")
    n, flagged, refused, _, answers, _ = flag_rate(clf, unlike_training(free))
    classes = ", ".join(f"{c} {answers.count(c)}" for c in sorted(set(answers))) or "none"
    print(f"\nBrain MRI unlike the training slices (reported, not counted above): {n} images, {flagged} flagged, "
          f"{n - flagged} answered ({classes}), {len(refused)} refused.")


if __name__ == "__main__":
    main()

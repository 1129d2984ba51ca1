#!/usr/bin/env python
"""How often the "not a brain MRI" check flags images that are not brain MRI, and real slices.

    python benchmarks/ood.py [--model model] [--data ../shared/data/brain-tumor-mri]

Not brain MRI: every image scikit-image ships in its wheel (``skimage.data``; its brain MRI excluded),
every single-image DICOM file pydicom ships that is not MR (CT, US, CR, NM, ...; files it refuses
are counted apart) and synthetic images (noise, gradients, shapes, constant). Real slices: the
leak-free Testing images (no copy in Training), read from their files as a user would upload them.
The flag is the app's: the colour / blank checks, then the Mahalanobis distance (``ood.safetensors``).
"""
import argparse
import time
import warnings

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
    from pathlib import Path

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


def flag_rate(clf, named):
    """(n, flagged, refused, unflagged names): ``named`` yields (name, image or path)."""
    n = flagged = 0
    refused, missed = [], []
    for name, image in named:
        try:
            a = clf.assess([image])[0]
        except ValueError:
            refused.append(name)
            continue
        n += 1
        flagged += a["warning"] is not None
        if a["warning"] is None:
            missed.append(f"{name} ({a['ood_score']:.1f})")
    return n, flagged, refused, missed


def leak_free_testing(data: str, data_config: dict):
    """(file name, path) of the leak-free Testing slices (the duplicate audit decodes them in the model's view)."""
    from pathlib import Path

    from brain_mri.data import prepare_data

    bundle = prepare_data(data, data_config, with_val=False, drop_leaks=False, progress=False)
    for name, free in zip(bundle.test.names, bundle.test_leak_free):
        if free:
            yield name, Path(data) / "Testing" / name


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model")
    p.add_argument("--data", default="../shared/data/brain-tumor-mri", help="dataset (Kaggle layout); '' to skip")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from pathlib import Path

    from brain_mri import BrainMRIClassifier

    clf = BrainMRIClassifier.from_pretrained(args.model)
    print(f"detector: {'none' if clf.ood is None else f'threshold {clf.ood.threshold:.2f}'}\n")
    sets = {"scikit-image data": skimage_images(), "pydicom test files, not MR": ((Path(f).name, f) for f in pydicom_files()),
            "synthetic": synthetic_images()}
    if args.data and Path(args.data).is_dir():
        sets["leak-free Testing (brain MRI)"] = leak_free_testing(args.data, clf.data_config)
    print("| set | images | flagged | share | refused as unreadable | not flagged |\n|---|---:|---:|---:|---:|---|")
    total = np.zeros(3, dtype=int)
    for name, named in sets.items():
        start = time.perf_counter()
        n, flagged, refused, missed = flag_rate(clf, named)
        if "Testing" in name:
            print(f"| **all not brain MRI** | {total[0]} | {total[1]} | **{total[1] / max(total[0], 1):.1%}** | {total[2]} | |")
        total += (n, flagged, len(refused))
        shown = ", ".join(missed[:8]) + (f" … (+{len(missed) - 8})" if len(missed) > 8 else "")
        print(f"| {name} | {n} | {flagged} | {flagged / max(n, 1):.1%} | {len(refused)} | "
              f"{shown if 'Testing' not in name else f'{n - flagged} ({time.perf_counter() - start:.0f} s)'} |")


if __name__ == "__main__":
    main()

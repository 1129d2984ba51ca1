#!/usr/bin/env python
"""Do the explanations point at anatomy? Share of Grad-CAM energy inside the head, over a test split.

    python benchmarks/cam_audit.py --model model --data ../shared/data/brain-tumor-mri [--grid runs/cam_grid.png]

The head mask thresholds the image (see ``brain_mri.explain.head_mask``). ``--grid`` writes a
grid of overlays per class for a person to look at: it shows dataset images, so write it outside
the repository (``runs/`` is ignored) and never commit it.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brain_mri import BrainMRIClassifier  # noqa: E402
from brain_mri.config import CLASS_NAMES  # noqa: E402
from brain_mri.explain import head_energy_share  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="Testing")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--grid", help="PNG path for a grid of overlays (outside the repository)")
    p.add_argument("--per-class", type=int, default=8, help="overlays per class in the grid")
    args = p.parse_args()

    clf = BrainMRIClassifier.from_pretrained(args.model)
    shares, grid = {c: [] for c in CLASS_NAMES}, {c: [] for c in CLASS_NAMES}
    for c in CLASS_NAMES:
        for path in sorted((Path(args.data) / args.split / c).glob("*.jpg")):
            e = clf.explain(path, method=args.method)
            shares[c].append(head_energy_share(e.heatmap, e.image))
            if len(grid[c]) < args.per_class:
                grid[c].append(np.hstack([e.image, e.overlay]))
    every = np.concatenate([shares[c] for c in CLASS_NAMES])
    print(f"{clf.source}, {args.method}, {len(every)} images of {args.split}")
    print("| class | images | mean share in head | median | images with share >= 0.9 |\n|---|---:|---:|---:|---:|")
    for c in CLASS_NAMES:
        s = np.asarray(shares[c])
        print(f"| {c} | {len(s)} | {s.mean():.3f} | {np.median(s):.3f} | {(s >= 0.9).mean():.3f} |")
    print(f"| all | {len(every)} | {every.mean():.3f} | {np.median(every):.3f} | {(every >= 0.9).mean():.3f} |")
    if args.grid:
        from PIL import Image

        rows = [np.hstack(grid[c]) for c in CLASS_NAMES if grid[c]]
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.vstack(rows)).save(args.grid)
        print(f"grid (rows: {', '.join(CLASS_NAMES)}): {args.grid}")


if __name__ == "__main__":
    main()

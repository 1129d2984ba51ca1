#!/usr/bin/env python
"""Do the explanations point at anatomy? Share of Grad-CAM energy inside the head, over a test split.

    python benchmarks/cam_audit.py --model model --data ../shared/data/brain-tumor-mri [--grid runs/cam_grid.png]

The head mask thresholds the image (see ``brain_mri.explain.head_mask``). ``--grid`` writes a
grid of overlays per class for a person to look at: it shows dataset images, so write it outside
the repository (``runs/`` is ignored) and never commit it.
"""
import argparse
from pathlib import Path

import numpy as np

from brain_mri import BrainMRIClassifier
from brain_mri.config import CLASS_NAMES
from brain_mri.explain import head_energy_share, head_mask


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="Testing")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--target-layer", default=None, help="dotted layer path; default the family's rule")
    p.add_argument("--grid", help="PNG path for a grid of overlays (outside the repository)")
    p.add_argument("--per-class", type=int, default=8, help="overlays per class in the grid")
    args = p.parse_args()

    clf = BrainMRIClassifier.from_pretrained(args.model)
    shares, areas, grid = ({c: [] for c in CLASS_NAMES} for _ in range(3))
    for c in CLASS_NAMES:
        for path in sorted((Path(args.data) / args.split / c).glob("*.jpg")):
            e = clf.explain(path, method=args.method, target_layer=args.target_layer)
            shares[c].append(head_energy_share(e.heatmap, e.image))
            areas[c].append(head_mask(e.image).mean())
            if len(grid[c]) < args.per_class:
                grid[c].append(np.hstack([e.image, e.overlay]))
    every = np.concatenate([shares[c] for c in CLASS_NAMES])
    print(f"{clf.source}, {args.method} on {args.target_layer or 'the default layer'}, {len(every)} images of {args.split}")
    # An all-zero CAM (every channel weighted negative) has no energy to place: counted apart.
    # The head's share of the image is what a flat, uninformative CAM would score.
    print("| class | images | empty CAMs | mean share in head | median | images with share >= 0.9 | head's share of image |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    table = [(c, np.asarray(shares[c]), np.asarray(areas[c])) for c in CLASS_NAMES]
    table.append(("all", every, np.concatenate([areas[c] for c in CLASS_NAMES])))
    for name, s, a in table:
        ok = s[~np.isnan(s)]
        print(f"| {name} | {len(s)} | {len(s) - len(ok)} | {ok.mean():.3f} | {np.median(ok):.3f} "
              f"| {(ok >= 0.9).mean():.3f} | {a.mean():.3f} |")
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

#!/usr/bin/env python
"""Do the explanations point at the tumour, and are they faithful to the model?

    python benchmarks/localisation.py --model model --data ../shared/data/brain-tumor-mri \\
        [--methods gradcam layercam] [--target-layer layer3.-1] [--faithfulness 40] [--grid runs/cam_grid.png]

Per split (the run's validation split, rebuilt from ``training_args.json``, and Testing) and CAM
method: the pointing game and CAM energy in the box / box share on images with a tumour box,
and CAM energy inside the head on "no tumour" images. Choose with the validation rows; the
Testing boxes are for measurement only. Then, on Testing's boxed images and the default CAM
layer, ROAD (pytorch-grad-cam) and the model-randomisation test, and ``--grid``: overlays with their boxes drawn, at most 24
small tiles (dataset images: keep the file out of the repository unless it is a card figure).
"""
import argparse
from pathlib import Path

import numpy as np

from brain_mri.evaluation.evaluate import cam_grid, cam_rows, localisation_table, run_bundle, view_batch
from brain_mri.evaluation.faithfulness import randomisation_correlation, randomised_copy, road_scores
from brain_mri.evaluation.localise import load_boxes, summarise


def boxed_batch(split, boxes, folder, data_config, n):
    """Normalised views and labels of up to ``n`` boxed images of a split."""
    idx = [i for i, name in enumerate(split.names) if f"{folder}/{name}" in boxes][:n]
    return view_batch(split, idx, data_config), split.labels[idx]


def faithfulness_table(model, batch, labels, methods, layer, data_config):
    """ROAD and the rank correlation with a copy whose last stage is re-initialised, per method."""
    print("\n| method | images | rank correlation with the randomised last stage | empty randomised maps | ROAD |\n"
          "|---|---:|---:|---:|---:|")
    for method in methods:
        rand = np.asarray(randomisation_correlation(model, randomised_copy(model), batch, labels, method, layer,
                                                    data_config))
        road = road_scores(model, batch, labels, method, layer, data_config)
        print(f"| {method} | {len(labels)} | {np.nanmean(rand):.3f} | {int(np.isnan(rand).sum())} | {road.mean():.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model")
    p.add_argument("--data", required=True)
    p.add_argument("--methods", nargs="+", default=["gradcam", "layercam", "eigencam"])
    p.add_argument("--target-layer", default=None, help="dotted layer path(s); default the model's (config.json), "
                   "else the family's rule")
    p.add_argument("--faithfulness", type=int, default=40, metavar="N", help="boxed Testing images for ROAD / randomisation")
    p.add_argument("--grid", help="PNG path for a grid of overlays with boxes")
    args = p.parse_args()

    boxes = load_boxes(args.data)
    if not boxes:
        raise SystemExit(f"No tumour boxes in {args.data} (tumour_boxes.csv): nothing to measure.")
    try:  # the validation split is rebuilt from the run's own seed, fraction and --keep-leaks
        model, data_config, bundle = run_bundle(args.model, args.data)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    shown = args.target_layer or data_config.get("cam_layer") or "the family rule layer"
    print(f"{args.model}, CAM on {shown}, the true class explained")
    for split, folder, name in ((bundle.val, "Training", "validation"), (bundle.test, "Testing", "Testing")):
        tables = {m: summarise(cam_rows(model, split, data_config, boxes, folder, m, args.target_layer))
                  for m in args.methods}
        print(f"\n{name}\n{localisation_table(tables)}")
    batch, labels = boxed_batch(bundle.test, boxes, "Testing", data_config, args.faithfulness)
    if len(labels):
        faithfulness_table(model, batch, labels, args.methods, args.target_layer, data_config)
    if args.grid:
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        n = cam_grid(model, bundle.test, data_config, boxes, "Testing", Path(args.grid), args.methods[0])
        print(f"grid ({n} Testing images, true class explained, box in white): {args.grid}")


if __name__ == "__main__":
    main()

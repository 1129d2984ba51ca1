#!/usr/bin/env python
"""Backbone sweep: a short training budget per timm architecture, one table to compare them.

    python benchmarks/sweep.py --data ../shared/data/brain-tumor-mri --out runs/sweep \\
        --archs resnet18 resnet10t efficientnet_b0 convnext_atto regnety_004 --epochs 6 --image-size 128

Each architecture trains with ``train.py`` (resumable: rerun the same command after a kill), then
the table gives validation macro-F1, leak-free test accuracy, latency, size and training time.
Choose on validation; the test columns are for the record.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--archs", nargs="+", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--latency-images", type=int, default=50)
    p.add_argument("--train-args", default="", help="extra train.py arguments, quoted")
    args = p.parse_args()

    out = Path(args.out)
    for arch in args.archs:
        run = out / arch
        if (run / "metrics.json").is_file():
            continue
        cmd = [sys.executable, str(ROOT / "train.py"), "--data", args.data, "--model", arch, "--epochs",
               str(args.epochs), "--image-size", str(args.image_size), "--output-dir", str(run), "--resume",
               "--patience", str(args.epochs), *args.train_args.split()]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)

    from latency import sample_images, timings  # beside this script

    from brain_mri import BrainMRIClassifier

    images = sample_images(Path(args.data) / "Testing", args.latency_images)
    rows = ["| model | params (M) | weights (MB) | input | val macro-F1 | leak-free test acc | full test acc | "
            "predict median (ms) | training (min, epochs) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arch in args.archs:
        run = out / arch
        m = json.loads((run / "metrics.json").read_text())
        clf = BrainMRIClassifier.from_pretrained(run)
        ms = statistics.median(timings(clf.predict, images))
        params = sum(t.numel() for t in clf.model.parameters()) / 1e6
        size = (run / "model.safetensors").stat().st_size / 1e6
        t = m["training"]
        rows.append(f"| {arch} | {params:.1f} | {size:.1f} | {clf.data_config['input_size'][1]} | "
                    f"{m['validation']['macro_f1']:.4f} | {m['test']['leak_free']['calibrated']['accuracy']:.4f} | "
                    f"{m['test']['full']['calibrated']['accuracy']:.4f} | {ms:.1f} | "
                    f"{t['seconds'] / 60:.1f} ({t['epochs_run']}) |")
    table = "\n".join(rows)
    (out / "sweep.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

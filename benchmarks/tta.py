#!/usr/bin/env python
"""Does left-right flip test-time augmentation pay for its latency? Decided on validation.

    python benchmarks/tta.py --model model --data ../shared/data/brain-tumor-mri

Rebuilds the run's validation split (seed and fraction from ``training_args.json``), scores it
with and without averaging the flipped image's probabilities, and times one image at a time
(the flip doubles the batch). Test figures are printed for the record, not for choosing.
"""
import argparse
import dataclasses
import statistics

import numpy as np
import torch

from brain_mri.evaluation.evaluate import run_bundle, split_logits
from brain_mri.evaluation.metrics import softmax
from latency import timings  # beside this script


def probabilities(accelerator, model, split, data_config, flip: bool):
    if flip:
        split = dataclasses.replace(split, images=split.images[..., ::-1].copy())
    logits, labels = split_logits(accelerator, model, split, data_config)
    return softmax(logits), labels


def median_ms(model, batch, repeats: int) -> float:
    with torch.inference_mode():
        return statistics.median(timings(model, [batch] * repeats))


def main():
    from accelerate import Accelerator
    from sklearn.metrics import accuracy_score, f1_score

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model")
    p.add_argument("--data", required=True)
    p.add_argument("--repeats", type=int, default=100, help="timed single-image runs")
    args = p.parse_args()

    model, data_config, bundle = run_bundle(args.model, args.data)
    accelerator = Accelerator()
    model = model.to(accelerator.device)

    size = data_config["input_size"][-1]
    one = torch.randn(1, 3, size, size, device=accelerator.device)
    ms = {False: median_ms(model, one, args.repeats), True: median_ms(model, one.repeat(2, 1, 1, 1), args.repeats)}
    print(f"{args.model}, {size} px, {torch.get_num_threads()} threads")
    print("| split | TTA | accuracy | macro-F1 | forward median (ms) |\n|---|---|---:|---:|---:|")
    leak_free = bundle.test.subset(np.flatnonzero(bundle.test_leak_free))
    for name, split in (("val", bundle.val), ("test (leak-free)", leak_free)):
        plain, labels = probabilities(accelerator, model, split, data_config, flip=False)
        flipped, _ = probabilities(accelerator, model, split, data_config, flip=True)
        for tta, prob in ((False, plain), (True, (plain + flipped) / 2)):
            pred = prob.argmax(1)
            print(f"| {name} | {'flip' if tta else 'none'} | {accuracy_score(labels, pred):.4f} "
                  f"| {f1_score(labels, pred, average='macro'):.4f} | {ms[tta]:.1f} |")


if __name__ == "__main__":
    main()

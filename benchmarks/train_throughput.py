#!/usr/bin/env python
"""Training throughput: fp32 against bf16, and the full pipeline (loader + augmentation + step)
against the model step alone.

    python benchmarks/train_throughput.py [--data ../shared/data/brain-tumor-mri] [--model resnet18] [--mri-augment mri]

First a plain training step in fp32 and in bf16 autocast, to show what ``--mixed-precision auto``
should pick on this CPU. Then, in the chosen precision, both sides run the same
``Trainer.train_epoch`` with the same model, optimizer and batch size; the model-only side feeds
ready, normalised tensors and skips augmentation.
"""
import argparse
import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from brain_mri.model import create_model, model_data_config
from brain_mri.training.data import DecodedSplit, make_loader, prepare_data
from brain_mri.training.engine import fast_bf16, resolve_mixed_precision
from brain_mri.training.mri_augment import PRESETS, from_preset
from brain_mri.training.trainer import Trainer
from brain_mri.transforms import BatchAugment, Normalize


class _Constant(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def timed_epoch(accelerator, model, loader, normalize, augment, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model_p, opt_p, loader_p, sched_p = accelerator.prepare(model, optimizer, loader, scheduler)
    trainer = Trainer(accelerator, model_p, opt_p, sched_p, torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                      normalize, augment)
    trainer.train_epoch(loader_p, 0, 1, 0)  # warm-up
    t = time.perf_counter()
    trainer.train_epoch(loader_p, 1, 1, 0)
    return steps * loader.batch_size / (time.perf_counter() - t)


def step_rate(model, images, labels, bf16: bool, steps: int) -> float:
    """Images per second of forward + backward + AdamW steps, after one warm-up step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * len(labels) / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="Kaggle-layout folder; default: random images of the same shape")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=12, help="timed steps per side")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16"))
    p.add_argument("--mri-augment", default="none", choices=tuple(PRESETS),
                   help="per-image MRI augmentation in the loader of the full pipeline (default %(default)s)")
    args = p.parse_args()

    set_seed(0)
    model, _ = create_model(args.model, "no")
    cfg = model_data_config(model, args.image_size)
    x, y = torch.randn(args.batch_size, 3, args.image_size, args.image_size), torch.randint(0, 4, (args.batch_size,))
    rates = {name: step_rate(model, x, y, name == "bf16", max(2, args.steps // 3)) for name in ("fp32", "bf16")}
    precision = resolve_mixed_precision(args.mixed_precision, cpu=True)
    print(f"| precision | model step, images/s |\n|---|---:|\n| fp32 | {rates['fp32']:.1f} |\n| bf16 | {rates['bf16']:.1f} |")
    print(f"native bf16 on this CPU: {fast_bf16(cpu=True)}; --mixed-precision {args.mixed_precision} -> {precision}\n")
    accelerator = Accelerator(mixed_precision=None if precision == "no" else precision, cpu=True)
    n = args.steps * args.batch_size
    if args.data:
        split = prepare_data(args.data, cfg, with_val=False, progress=False).train
        split = split.subset(np.arange(min(n, len(split))))
    else:
        rng = np.random.default_rng(0)
        split = DecodedSplit(rng.integers(0, 256, (n, 3, args.image_size, args.image_size), dtype=np.uint8),
                             rng.integers(0, 4, n), [""] * n, [""] * n, np.zeros((n, 1), np.float32),
                             np.zeros((n, 4), np.float32))
    steps = len(split) // args.batch_size
    normalize = Normalize(cfg["mean"], cfg["std"])

    per_image = from_preset(args.mri_augment)
    if per_image is not None:  # its cost alone, in this process, per image of this split
        t = time.perf_counter()
        for image in torch.from_numpy(split.images[:64]):
            per_image(image)
        print(f"--mri-augment {args.mri_augment}: {(time.perf_counter() - t) / min(64, len(split)) * 1000:.1f} ms "
              "per image in one process\n")
    full = timed_epoch(accelerator, model, make_loader(split, args.batch_size, True, args.workers, drop_last=True,
                                                       transform=per_image), normalize, BatchAugment(), steps)
    ready = normalize(torch.from_numpy(split.images[: steps * args.batch_size]))
    labels = torch.from_numpy(split.labels[: steps * args.batch_size])
    only = timed_epoch(accelerator, model,
                       torch.utils.data.DataLoader(_Constant(ready, labels), batch_size=args.batch_size, drop_last=True),
                       torch.nn.Identity(), lambda x, g=None: x, steps)
    print(f"{args.model} {args.image_size}px, batch {args.batch_size}, {precision}, --mri-augment {args.mri_augment}, "
          f"{torch.get_num_threads()} threads, {args.workers} worker(s), {steps} timed steps")
    print("| pipeline | images/s |\n|---|---:|")
    print(f"| model step alone (ready tensors) | {only:.1f} |")
    print(f"| full pipeline (loader + augmentation + step) | {full:.1f} |")
    print(f"| ratio | {full / only:.3f} |")


if __name__ == "__main__":
    main()

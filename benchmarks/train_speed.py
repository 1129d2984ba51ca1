#!/usr/bin/env python
"""Training speed of candidate backbones: images/s of one training step (forward, backward, AdamW), per setting.

    python benchmarks/train_speed.py [--archs tf_efficientnet_lite0 tf_efficientnet_lite1 resnet10t]
                                     [--sizes 128 160 192] [--batch-size 32] [--steps 6]

For each architecture, at the middle size: fp32 or bf16 autocast, channels-last or not, and the stem and first
stages trainable or frozen (:func:`brain_mri.model.freeze_stem`, as ``train.py --freeze-stem``); then every size at the fastest of those settings. Random images:
the step's cost does not depend on what they show. Run it on an idle machine, nothing beside it.
"""
import argparse
import itertools
import time

import torch

def images_per_second(arch: str, size: int, bf16: bool, channels_last: bool, freeze: bool, batch: int,
                      steps: int) -> float:
    import timm

    from brain_mri.model import freeze_stem

    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=4).train()
    if freeze:
        freeze_stem(model, arch)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=memory)
    y = torch.randint(0, 4, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: allocations, oneDNN kernels
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["tf_efficientnet_lite0", "tf_efficientnet_lite1", "resnet10t"])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 160, 192])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per setting")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.steps} timed steps after 2 warm-up\n")
    print("| architecture | px | precision | channels-last | stem + first stages | images/s |\n|---|---:|---|---|---|---:|")
    middle = args.sizes[len(args.sizes) // 2]
    for arch in args.archs:
        speeds = {}
        for bf16, cl, frozen in itertools.product((False, True), repeat=3):
            speeds[bf16, cl, frozen] = ips = images_per_second(arch, middle, bf16, cl, frozen, args.batch_size, args.steps)
            print(f"| {arch} | {middle} | {'bf16' if bf16 else 'fp32'} | {'yes' if cl else 'no'} | "
                  f"{'frozen' if frozen else 'trained'} | {ips:.1f} |", flush=True)
        bf16, cl, frozen = max(speeds, key=speeds.get)
        for size in (s for s in args.sizes if s != middle):
            ips = images_per_second(arch, size, bf16, cl, frozen, args.batch_size, args.steps)
            print(f"| {arch} | {size} | {'bf16' if bf16 else 'fp32'} | {'yes' if cl else 'no'} | "
                  f"{'frozen' if frozen else 'trained'} | {ips:.1f} |", flush=True)


if __name__ == "__main__":
    main()

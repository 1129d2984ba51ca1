#!/usr/bin/env python
"""Predict latency under CPU contention, for torch thread settings.

    python benchmarks/threads.py [--model model] [--n 60]

Each setting runs in a fresh process (OpenMP reads its environment once), one image at a time,
first alone, then beside a busy neighbour: a pure-Python loop (one core), then torch on every
core (as a training run would be).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time, torch
from brain_mri import BrainMRIClassifier, configure_threads
configure_threads() if sys.argv[2] == "auto" else torch.set_num_threads(int(sys.argv[2]))
clf = BrainMRIClassifier.from_pretrained(sys.argv[1])
x = clf.preprocess([__import__("PIL.Image", fromlist=["Image"]).new("RGB", (224, 224), (90, 90, 90))])
with torch.inference_mode():
    for _ in range(5):
        clf.model(x)
    times = []
    for _ in range(int(sys.argv[3])):
        t = time.perf_counter(); clf.model(x); times.append((time.perf_counter() - t) * 1000)
print(json.dumps(times))
"""

SETTINGS = {  # name -> (threads, extra environment)
    "brain-mri default (half the CPUs this process may use)": ("auto", {}),
    "1 thread": (1, {}),
    "2 threads (torch default here)": (2, {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
}


NEIGHBOURS = {
    "a Python loop": "while True: pass",
    "torch on all cores": "import torch\nx = torch.randn(512, 512)\nwhile True: x @ x",
    "a training-like loop": "import torch\nm = torch.nn.Conv2d(3, 64, 3)\nx = torch.randn(16, 3, 96, 96)\n"
                            "while True: m(x).sum().backward()",
}


def run(model, threads, env, n):
    out = subprocess.run([sys.executable, "-c", WORKER, model, str(threads), str(n)], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model")
    p.add_argument("--n", type=int, default=60)
    args = p.parse_args()
    print(f"{args.model}: model forward, one image, median of {args.n}; CPUs this process may use: "
          f"{len(os.sched_getaffinity(0))}")
    print("| setting | alone (ms) | " + " | ".join(f"beside {k} (ms)" for k in NEIGHBOURS) + " | worst ratio |")
    print("|---|---:|" + "---:|" * len(NEIGHBOURS) + "---:|")
    for name, (threads, env) in SETTINGS.items():
        alone = run(args.model, threads, env, args.n)
        loaded = []
        for code in NEIGHBOURS.values():
            busy = subprocess.Popen([sys.executable, "-c", code])
            try:
                time.sleep(1)
                loaded.append(run(args.model, threads, env, args.n))
            finally:
                busy.kill()
                busy.wait()
        print(f"| {name} | {alone:.1f} | " + " | ".join(f"{t:.1f}" for t in loaded) + f" | {max(loaded) / alone:.1f} |")

if __name__ == "__main__":
    main()

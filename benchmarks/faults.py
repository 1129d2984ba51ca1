#!/usr/bin/env python
"""Training survives SIGKILL: five kills, five resumes, the same model as a run never interrupted.

    python benchmarks/faults.py --data ../shared/data/brain-tumor-mri [--per-class 40] [--epochs 3]

A small copy of the dataset (``--per-class`` images per class and split) is trained once without
interruption, then again with ``--resume`` after each of five SIGKILLs: one at a random moment of
the start-up (loading, decoding), two before random training steps, one between the two renames of
a checkpoint swap and one with the model folder half written (``$BRAIN_MRI_CRASH_AT``). The
weights, the out-of-distribution detector, the metrics (less timings) and the training log (less
seconds) must be equal. ``--full-disk`` also checks that a write failure while exporting (a file
size limit, as a full disk would) leaves the previous model folder byte for byte.
"""
import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def small_copy(data: Path, per_class: int, dest: Path) -> Path:
    """The first ``per_class`` files of every class folder of Training and Testing."""
    for split in ("Training", "Testing"):
        for folder in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            files = sorted(folder.iterdir())
            (dest / split / folder.name).mkdir(parents=True)
            for f in files[:per_class] if per_class else files:
                shutil.copy2(f, dest / split / folder.name / f.name)
    return dest


def train(data: Path, out: Path, args, crash_at: str | None = None, kill_after: float | None = None,
          limit_bytes: int | None = None):
    """One ``train.py --resume`` run; returns (exit status, seconds, last log line)."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--output-dir", str(out), "--resume",
           "--epochs", str(args.epochs), "--model", args.model, "--image-size", str(args.image_size),
           "--batch-size", "8", "--patience", "100", "--model-ema", "0.9", "--workers", "0", "--cpu", "--keep-checkpoints"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("BRAIN_MRI_CRASH_AT", None)
    if crash_at:
        env["BRAIN_MRI_CRASH_AT"] = crash_at

    def limit():  # a file-size limit: writes past it fail, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    t = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "a") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
                                preexec_fn=limit if limit_bytes else None)
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = [ln for ln in (out.parent / f"{out.name}.log").read_text().splitlines() if " INFO " in ln or "error" in ln]
    return proc.returncode, time.perf_counter() - t, (lines[-1].split(": ", 1)[-1][:90] if lines else "")


def steps_per_epoch(out: Path) -> int:
    """Training batches per epoch of a finished run: its training split in whole batches of ``train``'s 8."""
    n = json.loads((out / "metrics.json").read_text())["split_sizes"]["train"]
    return n // min(8, n)


def fingerprint(out: Path) -> dict:
    """What must not depend on interruptions: weights, detector, metrics less timings, log less seconds."""
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["training"].pop("seconds", None)
    log = [ln.rsplit(",", 1)[0] for ln in (out / "training_log.csv").read_text().splitlines()]  # seconds last
    return {**{f: tensors_digest(out / f) for f in ("model.safetensors", "ood.safetensors")},
            "metrics": json.dumps(metrics, sort_keys=True), "log": log}


def tensors_digest(path: Path) -> str:
    """SHA-256 of a safetensors file's tensors and metadata, in name order (its header's key order varies)."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        digest.update(json.dumps(f.metadata(), sort_keys=True).encode())
        for name in sorted(f.keys()):
            digest.update(name.encode() + f.get_tensor(name).numpy().tobytes())
    return digest.hexdigest()


def folder_bytes(out: Path) -> dict:
    """The model folder's files; ``training_args.json`` is left out: every run rewrites it first (atomically)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "checkpoints" not in p.parts and p.name != "training_args.json"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--per-class", type=int, default=40, help="0: the whole dataset, used in place")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="resnet10t")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="of the random kill moments")
    p.add_argument("--full-disk", action="store_true")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="brain-mri-faults-"))
    data = small_copy(Path(args.data), args.per_class, work / "data") if args.per_class else Path(args.data)
    status, whole, _ = train(data, work / "reference", args)
    assert status == 0, (work / "reference.log").read_text()[-2000:]
    rng, rows = random.Random(args.seed), []
    total = args.epochs * steps_per_epoch(work / "reference")
    first = rng.randrange(1, total - 1)
    faults = [("timer", rng.uniform(0.05, 0.25) * whole), f"step:{first}", "checkpoint-swap",
              f"step:{rng.randrange(first + 1, total)}", "export"]  # each lies past the progress before it
    for fault in faults:
        timer = fault[1] if isinstance(fault, tuple) else None
        status, seconds, last = train(data, work / "resumed", args, None if timer else fault, timer)
        rows.append({"fault": f"SIGKILL after {timer:.1f} s" if timer else fault, "status": status,
                     "seconds": seconds, "last_log": last})
    status, _, _ = train(data, work / "resumed", args)
    result = {"reference_seconds": whole, "kills": rows, "final_status": status,
              "equal": fingerprint(work / "reference") == fingerprint(work / "resumed")}
    if args.full_disk:
        result["full_disk"] = full_disk(data, work, args)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


def full_disk(data: Path, work: Path, args) -> dict:
    """Re-exports the reference folder (its last checkpoint kept) with writes capped below the weights' size."""
    out = work / "full"
    shutil.copytree(work / "reference", out)
    before = folder_bytes(out)
    weights = (out / "model.safetensors").stat().st_size
    status, _, last = train(data, out, args, limit_bytes=weights // 2)
    return {"status": status, "message": last, "previous_folder_intact": folder_bytes(out) == before,
            "stage_left": (out / ".export").exists()}


def print_table(r: dict) -> None:
    print(f"reference run, never interrupted: {r['reference_seconds']:.1f} s")
    print("| # | fault | exit status | seconds | last log line before the kill |\n|---:|---|---:|---:|---|")
    for i, k in enumerate(r["kills"], 1):
        print(f"| {i} | {k['fault']} | {k['status']} | {k['seconds']:.1f} | {k['last_log']} |")
    print(f"| | resume to the end | {r['final_status']} | | |")
    print(f"weights, detector, metrics and log equal to the uninterrupted run: {r['equal']}")
    if "full_disk" in r:
        fd = r["full_disk"]
        print(f"full disk while exporting: exit status {fd['status']}, previous folder intact: "
              f"{fd['previous_folder_intact']} ({fd['message']})")


if __name__ == "__main__":
    main()

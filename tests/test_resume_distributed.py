"""--resume after a kill, and real two-process training (torchrun, gloo on the CPU)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, TINY_ARGS, run_train


def _rows(path):
    return list(csv.DictReader(open(path))) if path.is_file() else []


def test_resume_after_kill_mid_epoch(tiny_data, tmp_path):
    root, _ = tiny_data
    out = tmp_path / "run"
    epochs = 4
    # bigger inputs make an epoch last long enough to be killed inside it
    args = ["--data", root, "--epochs", epochs, "--output-dir", out, *TINY_ARGS, "--image-size", "64",
            "--batch-size", "2", "--patience", "100"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    deadline = time.time() + 240
    bar = ""
    try:
        while time.time() < deadline and proc.poll() is None:
            bar += proc.stderr.read(200)
            # killed while the progress bar of epoch 2 (after one checkpoint) is half-way
            if any(f"epoch 2/{epochs}:  {d}" in bar for d in "3456"):
                break
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = _rows(out / "training_log.csv")
    assert 1 <= len(done) < epochs
    assert not (out / "model.safetensors").exists()

    r = run_train(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Resumed from {out / 'checkpoints'}" in r.stderr
    rows = _rows(out / "training_log.csv")
    assert [int(x["epoch"]) for x in rows] == list(range(1, epochs + 1))
    assert rows[: len(done)] == done  # the epochs before the kill are kept, not redone
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_two_process_training(tiny_data, tmp_path):
    root, _ = tiny_data
    out = tmp_path / "ddp"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS,
                  launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr
    # only the main process logs and writes
    assert r.stderr.count("Model folder:") == 1
    for f in ("config.json", "model.safetensors", "README.md", "metrics.json"):
        assert (out / f).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    # gathered across processes: every test image is counted once, not half of them
    assert metrics["test"]["full"]["calibrated"]["n"] == metrics["split_sizes"]["test"]
    assert metrics["validation"]["n"] == metrics["split_sizes"]["val"]
    assert len(_rows(out / "test_predictions.csv")) == metrics["split_sizes"]["test"]

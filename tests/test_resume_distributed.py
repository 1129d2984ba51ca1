"""--resume after kills (benchmarks/faults.py: external SIGKILLs, mid-epoch steps, a checkpoint swap, the export),
and real two-process training (torchrun, gloo on the CPU)."""
import csv
import json
import signal
import subprocess
import sys

from conftest import ROOT, TINY_ARGS, run_train


def _rows(path):
    return list(csv.DictReader(open(path))) if path.is_file() else []


def test_two_process_training(tiny_data, tmp_path):
    root, _ = tiny_data
    out = tmp_path / "ddp"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS, "--mixup", "0.2", "--cutmix", "1.0",
                  launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr
    # only the main process logs and writes
    assert r.stderr.count("Model folder:") == 1
    assert json.loads((out / "training_args.json").read_text())["mixup"] == 0.2
    for f in ("config.json", "model.safetensors", "README.md", "metrics.json"):
        assert (out / f).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    # gathered across processes: every test image is counted once, not half of them
    assert metrics["test"]["full"]["calibrated"]["n"] == metrics["split_sizes"]["test"]
    assert metrics["validation"]["n"] == metrics["split_sizes"]["val"]
    assert len(_rows(out / "test_predictions.csv")) == metrics["split_sizes"]["test"]


def test_five_kills_and_a_full_disk_change_nothing(tiny_data, tmp_path):
    """benchmarks/faults.py on the tiny dataset: kills at random moments, in a checkpoint swap and in the
    export; each resumed, the model equals the uninterrupted run's; a full disk keeps the old folder."""
    root, _ = tiny_data
    report = tmp_path / "faults.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "faults.py"), "--data", str(root), "--per-class", "0",
                        "--epochs", "2", "--model", "test_resnet", "--image-size", "64", "--full-disk",
                        "--json", str(report)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(report.read_text())
    assert [k["status"] for k in result["kills"]] == [-signal.SIGKILL] * 5, result["kills"]
    assert result["final_status"] == 0 and result["equal"]
    full = result["full_disk"]
    assert full["status"] == 2 and full["previous_folder_intact"] and not full["stage_left"]

"""Offline behaviour of the Hub paths, and the metric helpers."""
import math
from pathlib import Path

import numpy as np
import pytest

from brain_mri.evaluation.metrics import expected_calibration_error, fit_temperature, softmax, wilson_interval
from brain_mri.hub import HubError, hub_unreachable_reason, push_to_hub
from brain_mri.model import PretrainedUnavailable, create_model, fold_temperature
from conftest import TINY_ARGS, run_cli, run_train


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_offline_fails_clearly_and_keeps_folder(trained_folder, monkeypatch):
    out, _ = trained_folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = _snapshot(out)
    with pytest.raises(HubError, match="folder .* is complete"):
        push_to_hub(out, "someone/brain-mri")
    assert _snapshot(out) == before


def test_push_without_network_fails_after_writing_the_folder(tiny_data, tmp_path):
    root, _ = tiny_data
    out = tmp_path / "pushed"
    # not HF_HUB_OFFLINE: the real network check runs against an endpoint nobody answers
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_secret_token_value"}
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS, "--push-to-hub",
                  "someone/brain-mri", env=env)
    assert r.returncode == 2
    assert "error: Cannot push to someone/brain-mri" in r.stderr and "Traceback" not in r.stderr
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md", ".csv"):
            assert "hf_secret_token_value" not in f.read_text()
    assert "hf_secret_token_value" not in r.stderr + r.stdout


def test_pretrained_yes_offline_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailable, match="--pretrained auto / no"):
        create_model("test_resnet", "yes")
    model, used = create_model("test_resnet", "auto")
    assert not used and model.num_classes == 4


def test_unknown_architecture_is_clear():
    with pytest.raises(ValueError, match="Unknown timm architecture 'resnet1000'"):
        create_model("resnet1000", "no")


def test_hub_reachability_check_is_quick_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    assert "unreachable" in hub_unreachable_reason(timeout=1)


def test_fold_temperature_divides_logits():
    import torch

    model, _ = create_model("test_resnet", "no")
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        fold_temperature(model, 2.5)
        after = model(x)
    torch.testing.assert_close(after, before / 2.5, rtol=1e-5, atol=1e-5)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 4000)
    true_logits = rng.normal(0, 1, (4000, 4))
    true_logits[np.arange(4000), labels] += 2.0
    # sample labels from the calibrated distribution, then make the model 3x overconfident
    p = softmax(true_logits)
    labels = np.array([rng.choice(4, p=row) for row in p])
    t = fit_temperature(true_logits * 3, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert expected_calibration_error(softmax(true_logits * 3 / t), labels) < \
        expected_calibration_error(softmax(true_logits * 3), labels)


def test_ece_and_wilson():
    probs = np.array([[0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0], [0.6, 0.4, 0, 0], [0.6, 0.4, 0, 0]])
    labels = np.array([0, 1, 0, 0])
    # bin 0.9: acc 0.5, conf 0.9 -> 0.4 * 0.5 ; bin 0.6: acc 1.0, conf 0.6 -> 0.4 * 0.5
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    lo, hi = wilson_interval(418, 419)
    assert 0.98 < lo < 0.99 and hi == pytest.approx(0.99958, abs=1e-4)
    assert math.isnan(wilson_interval(0, 0)[0])


def test_space_publish_offline_fails_clearly_and_leaves_nothing(tmp_path):
    import tempfile

    from conftest import ROOT

    def staged():
        return sorted(Path(tempfile.gettempdir()).glob("brain-mri-space-*"))

    before = staged()
    r = run_cli("space", "--repo-id", "someone/brain-mri-demo", "--source", ROOT, env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Cannot publish the Space someone/brain-mri-demo" in r.stderr
    assert "Nothing was written" in r.stderr and "Traceback" not in r.stderr
    assert staged() == before
    r = run_cli("space", "--repo-id", "someone/x", "--source", tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "not a brain-mri checkout" in r.stderr and str(tmp_path) not in r.stderr


@pytest.mark.parametrize("repo_id", ["../x", "a/../b", "/etc/passwd", "~/models", "a/b/c", "a/..", "owner\\name"])
def test_paths_are_refused_where_a_repo_id_is_expected(repo_id, tmp_path, monkeypatch):
    from brain_mri import BrainMRIClassifier
    from brain_mri.hub import check_repo_id, publish_space

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a call out would fail differently
    with pytest.raises(HubError, match="is not a Hub repo id"):
        check_repo_id(repo_id)
    with pytest.raises(HubError, match="is not a Hub repo id"):
        push_to_hub(tmp_path, repo_id)
    with pytest.raises(HubError, match="is not a Hub repo id"):
        publish_space(tmp_path, repo_id)
    with pytest.raises((FileNotFoundError, ValueError)):  # neither a folder nor an id: nothing downloaded
        BrainMRIClassifier.from_pretrained(repo_id)


def test_train_refuses_a_bad_push_target_before_training(tiny_data, tmp_path):
    root, _ = tiny_data
    r = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "out", "--push-to-hub", "../up", *TINY_ARGS)
    assert r.returncode == 2 and "is not a Hub repo id" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_staged_space_starts_and_answers(answering_folder, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    from gradio_client import Client, handle_file

    from brain_mri.config import CLASS_NAMES
    from conftest import ROOT, run_cli

    out, _ = answering_folder
    space = tmp_path / "space"
    r = run_cli("space", "--out", space, "--source", ROOT)
    assert r.returncode == 0, r.stderr
    pins = (space / "requirements.txt").read_text()
    assert "gradio==" in pins and "nibabel==" in pins and "torch==" in pins
    assert not any(tool in pins for tool in ("pytest", "playwright", "hypothesis", "datasets", "accelerate"))
    assert {p.name for p in space.iterdir()} == {"app.py", "requirements.txt", "README.md", "pyproject.toml",
                                                 "brain_mri", "examples", "docs"}
    readme = (space / "README.md").read_text()  # the README's docs pages and screenshot resolve on the Space
    assert "](docs/architecture.md)" in readme and "](docs/screenshot.png)" in readme
    assert (space / "docs" / "architecture.md").is_file() and (space / "docs" / "screenshot.png").stat().st_size > 10_000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "app.py", "--model", str(out)], cwd=space, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not up yet
                time.sleep(1)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        label, views, details, *_ = client.predict(handle_file(str(space / "examples" / "glioma_axial.jpg")),
                                                   api_name="/predict")
        assert set(details["probabilities"]) == set(CLASS_NAMES) and details["file"] == "glioma_axial.jpg"
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""A one-epoch run of a tiny timm model: the folder, the four loaders, the card, the CLI."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from brain_mri import BrainMRIClassifier
from brain_mri.config import CLASS_NAMES
from conftest import TINY_ARGS, run_cli, run_train

EXPECTED_FILES = ["config.json", "model.safetensors", "README.md", "metrics.json", "training_args.json",
                  "training_log.csv", "test_predictions.csv", "figures/confusion_leak_free.png",
                  "figures/roc_full.png", "figures/reliability_leak_free.png", "figures/training_curves.png",
                  "figures/cam_grid.png"]


def test_folder_is_complete(trained_folder):
    out, _ = trained_folder
    for f in EXPECTED_FILES:
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 4
    assert cfg["label_names"] == list(CLASS_NAMES)
    assert "num_classes" not in cfg.get("model_args", {})
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert {"mean", "std", "crop_pct"} <= set(cfg["pretrained_cfg"])
    args = json.loads((out / "training_args.json").read_text())
    assert args["epochs"] == 1 and args["model"] == "test_resnet" and "train.py" in args["command"]
    assert not (out / "checkpoints" / "last").exists()  # resumable state removed after success
    assert not list(out.glob("*.pt")) and not list(out.glob("*.bin"))


def test_no_pickles_and_safetensors_weights(trained_folder):
    import timm
    from safetensors.torch import load_file

    out, _ = trained_folder
    weights = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pkl")]
    assert sorted(p.relative_to(out).as_posix() for p in weights) == ["checkpoints/best.safetensors", "model.safetensors",
                                                                      "ood.safetensors"]
    for p in out.rglob("*"):  # nothing in the folder is a pickle (protocol 2+ or torch's zip)
        assert not (p.is_file() and p.read_bytes()[:2] in (b"\x80\x02", b"\x80\x04", b"PK")), p
    exported, best = load_file(out / "model.safetensors"), load_file(out / "checkpoints" / "best.safetensors")
    loaded = timm.create_model("local-dir:" + str(out), pretrained=True).state_dict()
    assert set(exported) == set(loaded)
    for k, v in exported.items():
        torch.testing.assert_close(v, loaded[k])
    # the exported head is the best checkpoint's with the fitted temperature folded in
    t = json.loads((out / "metrics.json").read_text())["temperature"]
    torch.testing.assert_close(exported["fc.weight"], best["fc.weight"] / t)
    torch.testing.assert_close(exported["fc.bias"], best["fc.bias"] / t)
    torch.testing.assert_close(exported["conv1.0.weight"], best["conv1.0.weight"])


def _four_loaders(folder, image_path, prepare=lambda im: im):
    """Probabilities from our API, timm, transformers' model and its pipeline; ``prepare`` is
    what a timm / transformers user does to the image first (the head crop)."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    ours = BrainMRIClassifier.from_pretrained(folder).predict(image_path)
    image = prepare(Image.open(image_path).convert("RGB"))

    tm = timm.create_model("local-dir:" + str(folder), pretrained=True).eval()
    tf = create_transform(**resolve_data_config({}, model=tm))
    with torch.no_grad():
        p = tm(tf(image.convert("RGB")).unsqueeze(0)).softmax(-1)[0]
    timm_probs = dict(zip(CLASS_NAMES, p.tolist()))

    hf = AutoModelForImageClassification.from_pretrained(folder).eval()
    proc = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        p = hf(**proc(image.convert("RGB"), return_tensors="pt")).logits.softmax(-1)[0]
    hf_probs = {hf.config.id2label[i]: v for i, v in enumerate(p.tolist())}

    pipe = pipeline("image-classification", model=str(folder))
    pipe_probs = {r["label"]: r["score"] for r in pipe(image.convert("RGB"), top_k=4)}
    return ours, timm_probs, hf_probs, pipe_probs


@pytest.mark.parametrize("folder", ["trained_folder", "cropped_folder"])
def test_four_loaders_agree(folder, sample_image, request):
    from brain_mri.transforms import crop_to_head

    out, _ = request.getfixturevalue(folder)
    results = _four_loaders(out, sample_image, crop_to_head if folder == "cropped_folder" else lambda im: im)
    ref = np.array([results[0][c] for c in CLASS_NAMES])
    assert abs(ref.sum() - 1) < 1e-5
    for r in results[1:]:
        assert set(r) == set(CLASS_NAMES)
        np.testing.assert_allclose([r[c] for c in CLASS_NAMES], ref, atol=1e-4)


def test_head_crop_is_recorded_and_applied(cropped_folder, sample_image):
    from brain_mri.transforms import HEAD_CROP, crop_to_head

    out, _ = cropped_folder
    assert json.loads((out / "config.json").read_text())["brain_mri"] == {"head_crop": HEAD_CROP,
                                                                          "cam_layer": "layer3.-1,layer4.-1"}
    clf = BrainMRIClassifier.from_pretrained(out)
    assert clf.data_config["head_crop"] == HEAD_CROP
    image = Image.open(sample_image).convert("RGB")
    assert crop_to_head(image).size != image.size  # the crop does something to these images
    np.testing.assert_allclose(list(clf.predict(image).values()), list(clf.predict(crop_to_head(image)).values()),
                               atol=0.02)  # cropping twice changes the box by a pixel or so, not the answer
    assert "Cropped to the head first" in (out / "README.md").read_text()


def test_predict_inputs_and_batching(trained_folder, sample_image, tmp_path):
    out, _ = trained_folder
    clf = BrainMRIClassifier.from_pretrained(out)
    rgb = Image.open(sample_image).convert("RGB")
    gray = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    arr16 = (np.asarray(gray).astype(np.uint16) * 257)
    png16 = tmp_path / "x16.png"
    Image.fromarray(arr16).save(png16)
    inputs = [str(sample_image), sample_image, rgb, gray, rgba, np.asarray(rgb), arr16, str(png16),
              rgb.resize((300, 200))]
    batch = clf.predict(inputs)
    assert len(batch) == len(inputs)
    for d in batch:
        assert list(d) == list(CLASS_NAMES) and abs(sum(d.values()) - 1) < 1e-5
    single = clf.predict(sample_image)
    # the batched result equals the single one, and all lossless encodings of one image agree
    for d in batch[:6]:
        np.testing.assert_allclose(list(d.values()), list(single.values()), atol=1e-5)
    # 16-bit full-range copy of the grey image rescales back to the same 8-bit picture
    np.testing.assert_allclose(list(batch[6].values()), list(batch[3].values()), atol=1e-5)
    assert clf.predict([]) == []


def test_predict_bad_input_is_clear(trained_folder, tmp_path):
    out, _ = trained_folder
    clf = BrainMRIClassifier.from_pretrained(out)
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="Cannot read notes.png"):
        clf.predict(bad)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        BrainMRIClassifier.from_pretrained(tmp_path)
    from brain_mri.hub import HubError

    with pytest.raises(HubError, match="Pass a local model folder"):
        BrainMRIClassifier.from_pretrained("someone/brain-mri-model")


def test_card_holds_measured_metrics(trained_folder):
    out, _ = trained_folder
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "test_predictions.csv")))
    # the metrics are those of the predictions written beside them
    for subset, keep in (("full", lambda r: True), ("leak_free", lambda r: r["leak_free"] == "1")):
        sel = [r for r in rows if keep(r)]
        acc = np.mean([r["label"] == r["predicted"] for r in sel])
        assert metrics["test"][subset]["calibrated"]["accuracy"] == pytest.approx(acc)
        assert metrics["test"][subset]["calibrated"]["n"] == len(sel)
    card = (out / "README.md").read_text()
    lf = metrics["test"]["leak_free"]["calibrated"]
    full = metrics["test"]["full"]["calibrated"]
    assert f"Leak-free test accuracy: {lf['accuracy'] * 100:.2f}%" in card
    assert f"| test, full | {full['n']} | {full['accuracy']:.4f}" in card
    assert f"T = {metrics['temperature']:.4f}" in card
    assert f"→ {lf['ece']:.4f}" in card
    assert "model-index" in card and "trained from scratch" in card
    assert "Br35H" in card and "not a medical device" in card
    assert "figures/confusion_leak_free.png" in card
    assert "train.py --data" in card
    loc = metrics["localisation"]
    assert loc["test"]["all boxed"]["boxed"] == 9 and loc["validation"]["all boxed"]["boxed"] >= 1
    assert "## Do the heatmaps point at the tumour?" in card and "figures/cam_grid.png" in card
    assert f"| test | all boxed | 9 | {loc['test']['all boxed']['pointing']:.3f} |" in card


def test_evaluate_cli_reproduces_card(trained_folder, evaluated):
    out, _ = trained_folder
    stdout, got = evaluated
    card = json.loads((out / "metrics.json").read_text())["test"]
    for subset in ("full", "leak_free"):
        for k in ("accuracy", "macro_f1", "ece", "nll"):
            assert got[subset][k] == pytest.approx(card[subset]["calibrated"][k], abs=1e-4), (subset, k)
    assert "| leak-free |" in stdout


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli("evaluate", "--model", tmp_path, "--data", "x")
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr


def test_card_rendered_again_with_notes(trained_folder, tmp_path):
    import shutil

    out, _ = trained_folder
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    before = (folder / "README.md").read_text()
    notes = tmp_path / "notes.md"
    notes.write_text("### Backbone sweep\n| model | val macro-F1 |\n|---|---:|\n| test_resnet | 0.5 |\n")
    r = run_cli("card", "--model", folder, "--notes", notes)
    assert r.returncode == 0, r.stderr[-2000:]
    after = (folder / "README.md").read_text()
    assert "## Model selection and explanations" in after and "| test_resnet | 0.5 |" in after
    assert "## Model selection and explanations" not in before
    # everything else is the same card
    notes_end = after.index("\n## ", after.index("## Model selection")) + 1
    assert after.replace(after[after.index("## Model selection"):notes_end], "") == before
    # rendering again without --notes keeps the notes given last time
    r = run_cli("card", "--model", folder)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (folder / "README.md").read_text() == after


def test_external_validation_goes_into_the_card_and_the_page_facts(trained_folder, tmp_path):
    import shutil

    from brain_mri.card import model_facts, save_external

    out, _ = trained_folder
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    assert "## External validation" not in (folder / "README.md").read_text()  # nothing measured: no section
    assert model_facts(str(folder))["external"] is None
    table = "| set | answered |\n|---|---:|\n| healthy head | 161 / 190 (85%) |"
    save_external(folder, {"command": "python benchmarks/external.py --model copy", "date": "2026-12-02",
                           "table": table, "rows": []})
    card = (folder / "README.md").read_text()
    assert "## External validation" in card and table in card and "[External validation](#external-validation)" in card
    section = model_facts(str(folder))["external"]
    assert table in section and "## Limitations" not in section and "python benchmarks/external.py --model copy" in section


def test_cam_layer_is_recorded_and_used_by_default(cropped_folder, sample_image):
    out, _ = cropped_folder
    clf = BrainMRIClassifier.from_pretrained(out)
    assert clf.data_config["cam_layer"] == "layer3.-1,layer4.-1"
    default = clf.explain(sample_image).heatmap
    np.testing.assert_array_equal(default, clf.explain(sample_image, target_layer="layer3.-1,layer4.-1").heatmap)
    assert "layer3.-1,layer4.-1" in (out / "README.md").read_text()


def test_unknown_cam_layer_fails_before_training(tiny_data, tmp_path):
    root, _ = tiny_data
    r = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "x", *TINY_ARGS, "--cam-layer", "layer9.-1")
    assert r.returncode == 2 and "has no module 'layer9.-1'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x" / "checkpoints" / "last").exists()


class _Trap:
    """Unpickling this writes a file: proof that a pickled checkpoint was opened."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_are_refused_unopened(trained_folder, tmp_path):
    import pickle
    import shutil

    out, _ = trained_folder
    folder = tmp_path / "pickled"
    shutil.copytree(out, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": _Trap(str(marker))}))
    with pytest.raises(ValueError, match=r"no model.safetensors \(only pytorch_model.bin\).*safetensors weights only"):
        BrainMRIClassifier.from_pretrained(folder)
    assert not marker.exists()
    r = run_cli("predict", "--model", folder, out / "README.md")
    assert r.returncode == 2 and "safetensors weights only" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()

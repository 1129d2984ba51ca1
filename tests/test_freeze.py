"""--freeze-stem and --channels-last: the stem and first stages keep their initial weights through a run."""
import json

import pytest
import torch
from conftest import TINY_ARGS, run_train

from brain_mri.model import freeze_stem, stem_modules


def test_freeze_stem_stops_the_gradient_of_the_stem_only():
    import timm

    model = timm.create_model("resnet10t", num_classes=4)
    assert freeze_stem(model, "resnet10t") == ["conv1", "bn1", "layer1"]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("conv1.", "bn1.", "layer1.")) for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("layer2.", "fc.")))
    with pytest.raises(ValueError, match="--freeze-stem knows the stems of"):
        stem_modules("convnext_atto")


def test_a_run_with_a_frozen_stem_exports_it_unchanged(tiny_data, tmp_path):
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    from brain_mri.model import create_model

    root, _ = tiny_data
    out = tmp_path / "model"
    r = run_train("--data", root, "--epochs", "1", "--output-dir", out, *TINY_ARGS, "--model", "resnet10t",
                  "--freeze-stem", "--channels-last", "--seed", "42")
    assert r.returncode == 0, r.stderr[-3000:]
    args = json.loads((out / "training_args.json").read_text())
    assert args["freeze_stem"] and args["channels_last"]
    set_seed(42)  # as the run did before it created its model
    initial, _ = create_model("resnet10t", "no", 32)
    exported = load_file(out / "model.safetensors")
    assert torch.equal(exported["layer1.0.conv1.weight"], initial.state_dict()["layer1.0.conv1.weight"])
    assert not torch.equal(exported["layer2.0.conv1.weight"], initial.state_dict()["layer2.0.conv1.weight"])

"""Grad-CAM: target layers per family, one pass, concurrency, hooks, and a sanity check."""
import threading

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from brain_mri import BrainMRIClassifier
from brain_mri.config import CAM_METHODS, CLASS_NAMES
from brain_mri.model import model_data_config
from brain_mri.serving.explain import UnsupportedArchitecture, target_layer_for
from conftest import BUNDLED_MODEL, requires_bundled_model


def _classifier(arch, size=64, **kw):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=4, **kw)
    return BrainMRIClassifier(model, model_data_config(model, size))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("arch, kw, size", [
    ("test_resnet", {}, 64), ("test_efficientnet", {}, 64), ("test_convnext", {}, 64),
    ("test_vit", {"img_size": 64}, 64), ("test_vit", {"img_size": 64, "reg_tokens": 2}, 64),
    ("mobilenetv3_small_050", {}, 64), ("regnetx_002", {}, 64),
    # random Swin weights can give an all-negative Grad-CAM (all zero after ReLU); LayerCAM keeps the map
    ("swin_tiny_patch4_window7_224", {"method": "layercam"}, 224),
])
def test_cam_per_family(arch, kw, size, sample_image):
    kw = dict(kw)
    method = kw.pop("method", "gradcam")
    clf = _classifier(arch, size, **kw)
    e = clf.explain(sample_image, method=method)
    assert e.heatmap.shape == (64, 64) and e.heatmap.dtype == np.float32  # the image's size
    assert e.heatmap.min() >= 0 and e.heatmap.max() <= 1 and e.heatmap.std() > 1e-3
    assert e.overlay.shape == e.image.shape == (64, 64, 3) and e.overlay.dtype == np.uint8
    assert e.view.shape == (size, size, 3)
    # probabilities of the CAM pass are those of a plain predict
    np.testing.assert_allclose(list(e.probabilities.values()), list(clf.predict(sample_image).values()), atol=1e-5)
    assert e.target == max(e.probabilities, key=e.probabilities.get)
    assert _hooks(clf.model) == 0


def test_vit_reshape_uses_the_models_grid():
    model = timm.create_model("test_vit", num_classes=4, img_size=96, reg_tokens=3)
    _, reshape = target_layer_for(model)
    tokens = torch.randn(2, model.num_prefix_tokens + 6 * 6, 7)
    assert model.patch_embed.grid_size == (6, 6)
    assert reshape(tokens).shape == (2, 7, 6, 6)


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_method_and_target(method, sample_image):
    clf = _classifier("test_resnet")
    predicted = max(clf.predict(sample_image).items(), key=lambda kv: kv[1])[0]
    other = next(c for c in CLASS_NAMES if c != predicted)
    for target, explained in ((None, predicted), (other, other)):
        e = clf.explain(sample_image, method=method, target=target)
        assert e.method == method and e.heatmap.shape == (64, 64)
        assert e.target == explained
    assert _hooks(clf.model) == 0


def test_the_map_follows_the_target_class(sample_image):
    clf = _classifier("test_resnet")
    maps = [clf.explain(sample_image, target=c).heatmap for c in CLASS_NAMES]
    assert any(not np.allclose(maps[0], m) for m in maps[1:])


def test_several_layers_average_into_a_finer_map(sample_image):
    clf = _classifier("test_resnet")
    last = clf.explain(sample_image, method="layercam").heatmap
    both = clf.explain(sample_image, method="layercam", target_layer="layer3.-1,layer4.-1").heatmap
    assert both.shape == last.shape and not np.allclose(both, last)
    assert len(np.unique(np.round(both, 4))) > len(np.unique(np.round(last, 4)))  # more detail
    assert _hooks(clf.model) == 0


@pytest.mark.parametrize("method, passes", [("gradcam", {"fwd": 1, "bwd": 0}), ("layercam", {"fwd": 1, "bwd": 1})])
def test_the_default_cam_needs_no_backward_pass(method, passes, sample_image):
    clf = _classifier("test_resnet")
    calls = {"fwd": 0, "bwd": 0}
    clf.model.register_forward_hook(lambda *a: calls.__setitem__("fwd", calls["fwd"] + 1))
    clf.model.register_full_backward_hook(lambda *a: calls.__setitem__("bwd", calls["bwd"] + 1))
    clf.explain(sample_image, method=method)
    assert calls == passes


@pytest.mark.parametrize("arch", ["resnet10t", "tf_efficientnet_lite0", "regnetx_002", "test_efficientnet"])
def test_the_forward_pass_grad_cam_equals_pytorch_grad_cams(arch):
    """Global-average-pool + linear head: Grad-CAM's channel weights are the head's weights over the cells."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from brain_mri.serving.explain import compute_cam, pooled_layer

    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=4).eval()
    for m in model.modules():  # trained-looking statistics, so the maps are not flat
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 96, 96)
    head, layer = pooled_layer(model)
    spread = []
    for target in (None, 0, 1, 2, 3):
        with torch.inference_mode():  # pytorch-grad-cam could not run here: the shortcut is taken
            logits, fast = compute_cam(model, x, "gradcam", target)
        with GradCAM(model=model, target_layers=[layer]) as cam:
            reference = cam(input_tensor=x, targets=None if target is None else [ClassifierOutputTarget(target)])[0]
        assert fast.shape == reference.shape == (96, 96)
        assert np.abs(fast - reference).max() <= 1e-4, target
        spread.append(reference.std())
    assert max(spread) > 0.05  # not only empty maps compared
    torch.testing.assert_close(logits, model(x).detach())


def test_no_shortcut_where_the_head_is_not_a_pooled_linear_layer():
    from brain_mri.serving.explain import pooled_layer

    assert pooled_layer(timm.create_model("test_convnext", num_classes=4)) is None  # norm after pooling
    assert pooled_layer(timm.create_model("mobilenetv3_small_050", num_classes=4)) is None  # conv after pooling
    assert pooled_layer(timm.create_model("test_vit", num_classes=4, img_size=64)) is None


def test_bad_arguments(sample_image):
    clf = _classifier("test_resnet")
    with pytest.raises(ValueError, match="Unknown CAM method"):
        clf.explain(sample_image, method="magic")
    with pytest.raises(ValueError, match="Unknown target class 'astrocytoma'"):
        clf.explain(sample_image, target="astrocytoma")
    with pytest.raises(ValueError, match="opacity"):
        clf.explain(sample_image, opacity=1.5)


def test_unsupported_architecture_names_the_way_out(sample_image):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    clf = BrainMRIClassifier(Tiny(), {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5,) * 3,
                                      "std": (0.5,) * 3, "crop_pct": 1.0, "crop_mode": "center"})
    with pytest.raises(UnsupportedArchitecture, match="target_layer="):
        clf.explain(sample_image)
    for layer in ("features.0", "features.1"):  # with and without weights of its own
        e = clf.explain(sample_image, target_layer=layer)
        assert e.heatmap.shape == (64, 64) and e.heatmap.std() > 1e-3


def test_concurrent_requests_do_not_mix(tiny_data):
    root, _ = tiny_data
    clf = _classifier("test_resnet")
    images = [root / "Testing" / c / f"Te-{c[:2]}_0002.jpg" for c in CLASS_NAMES]
    sequential = [clf.explain(p) for p in images]
    results = {}

    def work(i):
        for _ in range(3):
            results.setdefault(i, []).append(clf.explain(images[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, ref in enumerate(sequential):
        for got in results[i]:
            np.testing.assert_array_equal(got.heatmap, ref.heatmap)
            assert got.probabilities == ref.probabilities
    assert _hooks(clf.model) == 0


def test_memory_does_not_grow(sample_image):
    import gc
    import resource

    clf = _classifier("test_resnet")
    for _ in range(30):
        clf.explain(sample_image)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(300):
        clf.explain(sample_image)
    gc.collect()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, grown_mb
    assert _hooks(clf.model) == 0


@pytest.mark.parametrize("mode, region", [
    ("center", (50, 0, 250, 200)),  # the shorter edge fills the view: the sides are cut off
    ("squash", (0, 0, 300, 200)),  # both edges resized on their own
    ("border", (0, -50, 300, 250)),  # the longer edge fills the view: padding above and below
])
def test_view_region_is_what_the_eval_transform_shows(mode, region):
    from brain_mri.transforms import split_eval_transform, view_region

    cfg = {"input_size": (3, 60, 60), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
           "crop_pct": 1.0, "crop_mode": mode}
    x, y = np.meshgrid(np.arange(300), np.arange(200))  # red = column, green = row (a quarter grey level per px)
    image = Image.fromarray(np.dstack([x * 255 / 300, y * 255 / 300, np.full_like(x, 255)]).astype(np.uint8))
    assert view_region(image, cfg) == pytest.approx(region)
    view = np.asarray(split_eval_transform(cfg)[0](image)).astype(float)
    inside = view[..., 2] > 128  # padding is the mean grey, not white
    x0, y0, x1, y1 = region
    cols, rows = np.nonzero(inside.any(0))[0], np.nonzero(inside.any(1))[0]
    # the view's first and last image pixels hold the region's edges (within one view pixel)
    step = (x1 - x0) / 60 * 255 / 300
    assert view[rows[0], cols[0], 0] == pytest.approx(max(x0, 0) * 255 / 300, abs=step + 1)
    assert view[rows[-1], cols[-1], 0] == pytest.approx(min(x1, 300) * 255 / 300, abs=step + 1)
    assert view[rows[0], cols[0], 1] == pytest.approx(max(y0, 0) * 255 / 300, abs=step + 1)
    assert view[rows[-1], cols[-1], 1] == pytest.approx(min(y1, 200) * 255 / 300, abs=step + 1)


def test_heatmap_goes_back_where_the_view_came_from():
    from brain_mri.serving.explain import heatmap_on_image

    heatmap = np.zeros((10, 10), np.float32)
    heatmap[2, 7] = 1.0  # view cell (row 2, column 7)
    out = heatmap_on_image(heatmap, (50, -20, 250, 180), (300, 200))  # 20 px of the view lie above the image
    assert out.shape == (200, 300)
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert abs(x - (50 + 7.5 * 20)) <= 10 and abs(y - (-20 + 2.5 * 20)) <= 10
    assert not out[:, :50].any() and not out[:, 250:].any()  # outside the view nothing is lit


def test_explanations_are_in_the_images_own_coordinates(sample_image):
    clf = _classifier("test_resnet")
    wide = Image.open(sample_image).convert("RGB").resize((300, 200))
    e = clf.explain(wide)
    assert e.image.shape == e.overlay.shape == (200, 300, 3) and e.heatmap.shape == (200, 300)
    np.testing.assert_array_equal(e.image, np.asarray(wide))
    assert e.view.shape == (64, 64, 3)
    assert not e.heatmap[:, :45].any() and not e.heatmap[:, 255:].any() and e.heatmap[:, 60:240].any()
    huge = clf.explain(wide.resize((4096, 2730)))
    assert huge.image.shape == huge.heatmap.shape + (3,) == (1365, 2048, 3)


def test_explanations_with_the_head_crop_stay_on_the_head():
    from brain_mri.transforms import HEAD_CROP, head_box

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=4)
    clf = BrainMRIClassifier(model, {**model_data_config(model, 64), "head_crop": HEAD_CROP})
    x, y = np.meshgrid(np.arange(300), np.arange(200))
    head = np.where((x - 200) ** 2 + (y - 90) ** 2 < 40 ** 2, 90 + (x * 7 + y * 3) % 120, 0).astype(np.uint8)
    image = Image.fromarray(head).convert("RGB")
    e = clf.explain(image, method="eigencam")
    x0, y0, x1, y1 = head_box(image)
    assert e.heatmap.shape == (200, 300) and e.heatmap[max(y0, 0):y1, x0:x1].any()
    assert not e.heatmap[:, :x0].any() and not e.heatmap[y1:, :].any()  # nothing outside the crop


@requires_bundled_model
def test_cam_depends_on_learned_weights(sample_image):
    """Adebayo et al.'s sanity check: randomising the last stage of the trained model changes the map."""
    clf = BrainMRIClassifier.from_pretrained(BUNDLED_MODEL)
    from brain_mri.evaluation.faithfulness import randomised_copy

    before = clf.explain(sample_image).heatmap
    after = BrainMRIClassifier(randomised_copy(clf.model), clf.data_config).explain(sample_image).heatmap
    assert before.std() > 0  # the trained model's map shows something
    if after.std() > 0:  # a flat (empty) map of the randomised copy shares nothing with it either
        corr = np.corrcoef(before.ravel(), after.ravel())[0, 1]
        assert corr < 0.9, corr

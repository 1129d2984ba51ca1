"""The Gradio app, driven through gradio_client against a server launched here."""
import io

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402
from brain_mri import BrainMRIClassifier  # noqa: E402
from brain_mri.config import DISPLAY_NAMES  # noqa: E402


@pytest.fixture(scope="module")
def server(trained_folder):
    out, _ = trained_folder
    demo = app.build_demo(BrainMRIClassifier.from_pretrained(out))
    demo.queue(default_concurrency_limit=2).launch(prevent_thread_lock=True, max_file_size=app.MAX_FILE_SIZE,
                                                   server_name="127.0.0.1", quiet=True)
    client = Client(demo.local_url, verbose=False)
    yield client, out
    demo.close()


def call(client, image=None, dicom=None, method="gradcam", target="predicted", opacity=0.5):
    return client.predict(handle_file(str(image)) if image else None, handle_file(str(dicom)) if dicom else None,
                          method, target, opacity, api_name="/predict")


@pytest.fixture(scope="module")
def good_inputs(tiny_data, tmp_path_factory):
    from pydicom import examples

    root, _ = tiny_data
    d = tmp_path_factory.mktemp("inputs")
    src = Image.open(root / "Testing" / "glioma" / "Te-gl_0001.jpg").convert("L").resize((200, 180))
    src.convert("RGB").save(d / "slice.jpg", quality=92)
    src.save(d / "grey.png")
    Image.fromarray(np.asarray(src).astype(np.uint16) * 257).save(d / "sixteen.png")
    src.convert("RGBA").save(d / "rgba.png")
    return {"jpeg": d / "slice.jpg", "grey": d / "grey.png", "16bit": d / "sixteen.png", "rgba": d / "rgba.png",
            "dicom": examples.get_path("mr")}


@pytest.mark.parametrize("kind", ["jpeg", "grey", "16bit", "rgba", "dicom"])
def test_good_inputs(server, good_inputs, kind):
    client, out = server
    path = good_inputs[kind]
    label, seen, overlay, note = call(client, dicom=path) if kind == "dicom" else call(client, image=path)
    probs = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(probs) == set(DISPLAY_NAMES.values())
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    size = (64, 64) if kind == "dicom" else (200, 180)  # the upload's own size, not the model's
    for img in (seen, overlay):
        assert img.endswith(".png")
        assert Image.open(img).size == tuple(size)
    assert "Grad-CAM" in note


def test_target_class_and_method(server, good_inputs):
    client, _ = server
    _, _, overlay_a, note = call(client, image=good_inputs["jpeg"], method="eigencam", target="pituitary",
                                 opacity=0.9)
    assert "EigenCAM" in note and "Pituitary tumour" in note
    _, _, overlay_b, _ = call(client, image=good_inputs["jpeg"], method="eigencam", target="pituitary", opacity=0.1)
    assert not np.array_equal(np.asarray(Image.open(overlay_a)), np.asarray(Image.open(overlay_b)))


def _bad_files(d):
    (d / "notes.png").write_text("this is text, not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)).save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    # a decompression bomb: a tiny PNG that claims 20000 x 20000 pixels
    Image.new("L", (20000, 20000)).save(d / "bomb.png", optimize=True)
    (d / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    return d


@pytest.mark.parametrize("name, field, message", [
    ("notes.png", "image", "Cannot read notes.png"),
    ("truncated.jpg", "image", "Cannot read truncated.jpg"),
    ("bomb.png", "image", "decompression bomb"),
    ("broken.dcm", "dicom", "Cannot read broken.dcm as DICOM"),
])
def test_bad_inputs_get_a_message_and_the_app_stays_up(server, good_inputs, tmp_path, name, field, message):
    client, _ = server
    path = _bad_files(tmp_path) / name
    with pytest.raises(Exception, match=message):
        call(client, **{field: path})
    label, *_ = call(client, image=good_inputs["jpeg"])
    assert len(label["confidences"]) == 4


def test_empty_submission(server, good_inputs):
    client, _ = server
    with pytest.raises(Exception, match="Upload an MRI slice first"):
        call(client)
    assert call(client, image=good_inputs["grey"])[0]["confidences"]


def test_oversized_file_is_refused(server, good_inputs, tmp_path):
    client, _ = server
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 20e6
    with pytest.raises(Exception, match="(?i)size|too large|exceed"):
        call(client, image=big)
    assert call(client, image=good_inputs["jpeg"])[0]["confidences"]


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGB", (200, 200), (128, 128, 128)),
    lambda: Image.fromarray(np.dstack([np.full((200, 200), 220, np.uint8), np.tile(np.arange(200, dtype=np.uint8), (200, 1)),
                                       np.full((200, 200), 30, np.uint8)])),
])
def test_not_an_mri_gets_a_warning_not_a_label(server, tmp_path, make):
    client, _ = server
    path = tmp_path / "odd.png"
    make().save(path)
    label, _, overlay, note = call(client, image=path)
    assert "⚠️" in note
    assert label is None or not label.get("confidences")
    assert overlay.endswith(".png")


def test_analyse_without_a_server(trained_folder, good_inputs, tmp_path):
    out, _ = trained_folder
    clf = BrainMRIClassifier.from_pretrained(out)
    label, seen, overlay, note = app.analyse(clf, str(good_inputs["jpeg"]), None, "layercam", "meningioma", 0.3)
    expected = clf.explain(good_inputs["jpeg"], method="layercam", target="meningioma", opacity=0.3)
    assert label == {DISPLAY_NAMES[c]: p for c, p in expected.probabilities.items()}
    np.testing.assert_array_equal(seen, expected.image)
    np.testing.assert_array_equal(overlay, expected.overlay)
    assert note == "Heatmap: **LayerCAM** for **Meningioma**."
    # the DICOM input wins over the image input when both are given
    dicom_label, *_ = app.analyse(clf, str(good_inputs["jpeg"]), str(good_inputs["dicom"]), "gradcam", "predicted", 0.5)
    assert dicom_label == {DISPLAY_NAMES[c]: p for c, p in clf.predict(good_inputs["dicom"]).items()}
    with pytest.raises(gr.Error, match="Upload an MRI slice first"):
        app.analyse(clf, None, None, "gradcam", "predicted", 0.5)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="Cannot read notes.jpg as an image"):
        app.analyse(clf, str(bad), None, "gradcam", "predicted", 0.5)
    with pytest.raises(gr.Error, match="Unknown CAM method 'magic'"):
        app.analyse(clf, str(good_inputs["jpeg"]), None, "magic", "predicted", 0.5)
    grey = tmp_path / "grey.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(grey)
    with pytest.warns(UserWarning, match="blank or nearly constant"):
        label, _, overlay, note = app.analyse(clf, str(grey), None, "gradcam", "predicted", 0.5)
    assert label is None and note.startswith("### ⚠️ This image is blank") and overlay.shape[-1] == 3


def test_app_uses_only_the_public_api():
    import ast

    tree = ast.parse((app.HERE / "app.py").read_text())
    used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.startswith("brain_mri")}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("brain_mri")}
    assert used == {"brain_mri", "brain_mri.config"}


def test_offline_hub_model_is_a_clear_error_at_start():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "app.py", "--model", "someone/brain-mri"], cwd=app.HERE,
                       capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cannot load the model 'someone/brain-mri'" in r.stderr and "local model folder" in r.stderr


def test_model_facts_come_from_the_card(trained_folder):
    import json

    out, _ = trained_folder
    facts = app.facts_markdown(BrainMRIClassifier.from_pretrained(out))
    lf = json.loads((out / "metrics.json").read_text())["test"]["leak_free"]["calibrated"]["accuracy"]
    assert f"accuracy {round(lf, 4):.2%}" in facts and "test_resnet" in facts and "leak-free" in facts


def test_gallery_only_when_examples_exist(trained_folder, good_inputs):
    out, _ = trained_folder
    clf = BrainMRIClassifier.from_pretrained(out)

    def datasets(demo):
        return [b for b in demo.blocks.values() if isinstance(b, gr.Dataset)]

    assert not datasets(app.build_demo(clf, examples=[]))
    assert len(datasets(app.build_demo(clf, examples=[str(good_inputs["jpeg"])]))) == 1

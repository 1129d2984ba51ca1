"""The Gradio app, driven through gradio_client against a server launched here."""
import io
import json

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402
from brain_mri import BrainMRIClassifier  # noqa: E402
from brain_mri.config import CLASS_NAMES, DISPLAY_NAMES, true_class  # noqa: E402


@pytest.fixture(scope="module")
def server(answering_folder):
    out, _ = answering_folder
    demo = app.build_demo(BrainMRIClassifier.from_pretrained(out))
    demo.queue(default_concurrency_limit=2).launch(prevent_thread_lock=True, max_file_size=app.MAX_FILE_SIZE,
                                                   server_name="127.0.0.1", quiet=True)
    client = Client(demo.local_url, verbose=False)
    yield client, out
    demo.close()


def call(client, image=None, dicom=None, **kwargs):
    """Only what a test names is sent: every other input takes its default, as in the README's one-liner."""
    files = {k: handle_file(str(v)) for k, v in (("image", image), ("dicom", dicom)) if v}
    return client.predict(**files, **kwargs, api_name="/predict")[:5]  # a slice: the scan's plot and top slices are hidden


def answer(*args, **kwargs):
    """The handler's last answer, as the page shows it; a slice's first five outputs."""
    return list(app.analyse(*args, **kwargs))[-1][:5]


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


def test_the_readme_one_liner(server, good_inputs):
    client, out = server
    label, views, details, summary, report, *_ = client.predict(handle_file(str(good_inputs["jpeg"])), api_name="/predict")
    clf = BrainMRIClassifier.from_pretrained(out)
    expected = clf.predict(good_inputs["jpeg"])
    assert details["probabilities"] == pytest.approx(expected, abs=1e-5) and set(details["probabilities"]) == set(CLASS_NAMES)
    assert details["predicted"] == max(expected, key=expected.get) == details["explained_class"]
    assert details["cam_method"] == "gradcam" and details["model"].startswith("local model (test_resnet, weights ")
    assert label["label"] == DISPLAY_NAMES[details["predicted"]]
    assert [Image.open(v).size for v in views] == [(200, 180)] * 2  # the upload and its overlay, at its own size
    assert f"{expected[details['predicted']]:.1%}" in summary and str(out) not in summary
    assert Image.open(report).size[0] > 600


@pytest.mark.parametrize("kind", ["jpeg", "grey", "16bit", "rgba", "dicom"])
def test_good_inputs(server, good_inputs, kind):
    client, out = server
    path = good_inputs[kind]
    label, views, details, summary, _ = call(client, dicom=path) if kind == "dicom" else call(client, image=path)
    probs = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(probs) == set(DISPLAY_NAMES.values())
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    size = (64, 64) if kind == "dicom" else (200, 180)  # the upload's own size, not the model's
    for img in views:
        assert img.endswith(".png") and Image.open(img).size == size
    assert "Grad-CAM" in summary and details["file"] == path.name


def test_inputs_take_ids_or_shown_names(server, good_inputs):
    client, _ = server
    by_id = call(client, image=good_inputs["jpeg"], method="eigencam", target="pituitary", opacity=0.9)
    by_name = call(client, image=good_inputs["jpeg"], method="EigenCAM", target="Pituitary tumour", opacity=0.9)
    assert by_id[2]["cam_method"] == by_name[2]["cam_method"] == "eigencam"
    assert by_id[2]["explained_class"] == by_name[2]["explained_class"] == "pituitary"
    assert "EigenCAM" in by_id[3] and "Pituitary tumour" in by_id[3]
    faint = call(client, image=good_inputs["jpeg"], method="eigencam", target="pituitary", opacity=0.1)
    assert not np.array_equal(np.asarray(Image.open(by_id[1][1])), np.asarray(Image.open(faint[1][1])))
    with pytest.raises(Exception, match="Unknown CAM method 'magic'"):
        call(client, image=good_inputs["jpeg"], method="magic")


def test_api_reads_well(server):
    client, _ = server
    api = client.view_api(print_info=False, return_format="dict")
    # page-load, gallery and example handlers stay private
    assert list(api["named_endpoints"]) == ["/predict", "/predict_volume"]
    endpoint = api["named_endpoints"]["/predict"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == ["image", "dicom", "method", "target", "opacity",
                                                                     "plane"]
    assert all(p["parameter_has_default"] for p in endpoint["parameters"])
    assert [r["label"] for r in endpoint["returns"]][:3] == [
        "Label", "Your image | Grad-CAM overlay (drag to compare; scroll to zoom)", "Details"]
    volume = api["named_endpoints"]["/predict_volume"]
    assert [p["parameter_name"] for p in volume["parameters"]] == ["files", "plane"]
    assert "Scores every slice of a whole scan" in volume["description"]


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
    with pytest.raises(Exception, match=message) as refused:
        call(client, **{field: path})
    assert "/tmp" not in str(refused.value) and "gradio" not in str(refused.value).lower()  # no server path
    label, *_ = call(client, image=good_inputs["jpeg"])
    assert len(label["confidences"]) == 4


def test_a_rejected_upload_logs_one_line_and_no_traceback(server, tmp_path, capfd, caplog):
    client, _ = server
    caplog.set_level("INFO", logger="app")
    path = _bad_files(tmp_path) / "notes.png"
    with pytest.raises(Exception, match="Cannot read notes.png"):
        call(client, image=path)
    lines = [r.getMessage() for r in caplog.records if r.name == "app"]
    assert len(lines) == 1 and lines[0].startswith("rejected: Cannot read notes.png") and "\n" not in lines[0]
    assert "Traceback" not in capfd.readouterr().err


def test_names_are_escaped_on_the_page(answering_folder, tmp_path):
    # Gradio renders error messages as HTML; its upload route strips "<" from names, a direct call does not
    path = tmp_path / "<b>x.png"
    path.write_bytes(b"not an image")
    with pytest.raises(gr.Error) as refused:
        answer(BrainMRIClassifier.from_pretrained(answering_folder[0]), str(path))
    assert "<b>" not in refused.value.message and "&lt;b&gt;x.png" in refused.value.message


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
    label, views, details, summary, _ = call(client, image=path)
    assert "⚠️ No answer" in summary and details["predicted"] is None and details["warning"]
    assert label is None or not label.get("confidences")
    assert views[1].endswith(".png")


def test_analyse_without_a_server(answering_folder, good_inputs, tmp_path):
    out, _ = answering_folder
    clf = BrainMRIClassifier.from_pretrained(out)
    label, (seen, overlay), details, summary, report = answer(clf, str(good_inputs["jpeg"]), None, "layercam",
                                                                   "meningioma", 0.3)
    expected = clf.explain(good_inputs["jpeg"], method="layercam", target="meningioma", opacity=0.3)
    assert label == {DISPLAY_NAMES[c]: p for c, p in expected.probabilities.items()}
    np.testing.assert_array_equal(np.asarray(Image.open(seen)), expected.image)  # PNG: no loss
    np.testing.assert_array_equal(np.asarray(Image.open(overlay)), expected.overlay)
    assert "Heatmap: <b>LayerCAM</b> of <b>Meningioma</b>" in summary and "Uploads are not stored" in summary
    # the DICOM input wins over the image input when both are given, and the page says so
    dicom_label, _, _, summary, _ = answer(clf, str(good_inputs["jpeg"]), str(good_inputs["dicom"]))
    assert dicom_label == {DISPLAY_NAMES[c]: p for c, p in clf.predict(good_inputs["dicom"]).items()}
    assert "the DICOM file was analysed" in summary
    with pytest.raises(gr.Error, match="Upload an MRI slice first"):
        answer(clf, None, None)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="Cannot read notes.jpg as an image") as err:
        answer(clf, str(bad))
    assert str(tmp_path) not in str(err.value)
    grey = tmp_path / "grey.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(grey)
    with pytest.warns(UserWarning, match="blank or nearly constant"):
        label, (_, overlay), details, summary, _ = answer(clf, str(grey))
    assert label is None and details["predicted"] is None and "blank" in summary
    assert np.asarray(Image.open(overlay)).shape[-1] == 3


def test_example_by_name_has_its_true_class_and_a_link(answering_folder):
    out, _ = answering_folder
    clf = BrainMRIClassifier.from_pretrained(out)
    examples = app.example_files()
    assert len(examples) >= 8 and {true_class(n) for n in examples} == set(CLASS_NAMES)
    image, dicom, label, views, details, summary, report, plot, top, tabs = app.open_example(
        clf, examples, "pituitary_sagittal.jpg")
    assert image.endswith("pituitary_sagittal.jpg") and dicom is None and details["file"] == "pituitary_sagittal.jpg"
    assert "True class of this example: <b>Pituitary tumour</b>" in summary
    assert "?example=pituitary_sagittal.jpg" in summary
    image, dicom, *_ = app.open_example(clf, examples, "meningioma_coronal.dcm")
    assert image is None and dicom.endswith(".dcm")


def test_app_uses_only_the_public_api():
    import ast

    tree = ast.parse((app.HERE / "app.py").read_text())
    used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.startswith("brain_mri")}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("brain_mri")}
    assert used == {"brain_mri", "brain_mri.config", "brain_mri.io.volumes", "brain_mri.serving.answers",
                    "brain_mri.serving.captions", "brain_mri.serving.examples", "brain_mri.serving.page",
                    "brain_mri.serving.report", "brain_mri.serving.scans"}


def test_hub_unreachable_falls_back_to_the_bundled_model(monkeypatch):
    from conftest import BUNDLED_MODEL

    if not (BUNDLED_MODEL / "model.safetensors").is_file():
        pytest.skip("no bundled model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BRAIN_MRI_MODEL", raising=False)
    assert app.front_matter_model() == "brain-mri/brain-mri-classifier"  # the README's models: entry
    clf, notice = app.load_model(None)
    arch = json.loads((BUNDLED_MODEL / "config.json").read_text())["architecture"]
    assert app.model_name(clf).startswith(f"bundled model ({arch}, weights ")
    short, detail = notice
    assert "brain-mri/brain-mri-classifier could not be loaded" in short and "HF_HUB_OFFLINE" in detail
    assert len(short) < 100 and "\n" not in short and "HF_HUB_OFFLINE" not in short  # one short line for visitors
    page = app.build_demo(clf, examples={}, notice=notice)
    shown = " ".join(str(b.value) for b in page.blocks.values() if isinstance(b, gr.Markdown))
    assert f"Weights in use:** bundled model ({arch}" in shown and "could not be loaded" in shown
    folded = [b for b in page.blocks.values() if isinstance(b, gr.Accordion)]
    why = [b for b in folded if b.label == "Why the bundled model?"]
    assert len(why) == 1 and not why[0].open  # the reason: one click away
    # under the disclaimer, the external validation in one sentence, linked to the card's section on the page
    assert "it is less reliable" in shown and "([external validation](#external-validation))" in shown
    assert [b.elem_id for b in folded if b is not why[0]] == ["external-validation"]
    assert "| chris_t1 as a DICOM series (a window per file) | no tumour |" in shown
    assert str(BUNDLED_MODEL) not in shown


def test_model_facts_come_from_the_card(answering_folder):
    import json

    out, _ = answering_folder
    clf = BrainMRIClassifier.from_pretrained(out)
    facts = app.facts_markdown(clf.facts(), app.model_name(clf))
    lf = json.loads((out / "metrics.json").read_text())["test"]["leak_free"]["calibrated"]["accuracy"]
    assert f"accuracy {round(lf, 4):.2%}" in facts and "test_resnet" in facts and "leak-free" in facts


def test_examples_and_gallery_only_when_examples_exist(answering_folder, good_inputs):
    out, _ = answering_folder
    clf = BrainMRIClassifier.from_pretrained(out)

    def blocks(demo, kind):  # the scan's top slices have their own gallery, always there
        return [b for b in demo.blocks.values() if isinstance(b, kind) and b.elem_id != "scan-top"]

    empty = app.build_demo(clf, examples={})
    assert not blocks(empty, gr.Dataset) and not blocks(empty, gr.Gallery)
    one = app.build_demo(clf, examples={"glioma_x.jpg": good_inputs["jpeg"]})
    assert len(blocks(one, gr.Dataset)) == 1 and len(blocks(one, gr.Gallery)) == 1
    assert blocks(one, gr.Dataset)[0].sample_labels is None  # labels would replace the thumbnails


def test_a_scan_gets_its_plot_top_slices_and_every_slice(server, tmp_path):
    from volume_files import example_slices, write_nifti

    client, out = server
    names = ["notumor_axial_1.jpg", "glioma_axial.jpg", "notumor_axial_2.jpg", "pituitary_axial.jpg", "notumor_axial_3.jpg"]
    scan = write_nifti(tmp_path / "scan.nii.gz", example_slices(names, 96), spacing=(1.0, 1.0, 4.0))
    label, views, details, summary, report, plot, top = client.predict(dicom=handle_file(str(scan)), api_name="/predict")
    assert not label and details["file"] == "scan.nii.gz" and details["kind"] == "NIfTI"
    assert len(details["slices"]) == 5 and details["top_slices"] == [s[0] for s in sorted(
        ((i, -r["tumour_probability"]) for i, r in enumerate(details["slices"]) if not r["flagged"]),
        key=lambda t: (t[1], t[0]))][:4]
    assert plot["visible"] and top["visible"]  # shown only for a scan (an update over the API)
    assert Image.open(plot["value"]).size == (900, 300) and [Image.open(v).size for v in views] == [(96, 96)] * 2
    assert [t["caption"].split(":")[0] for t in top["value"]] == [f"slice {i}" for i in details["top_slices"]]
    assert "Whole scan: 5 axial slices" in summary and "judges each slice on its own" in summary
    assert str(tmp_path) not in summary
    numbers = json.loads(Image.open(report).text["brain-mri"])
    assert len(numbers["slices"]) == 5 and numbers["top_slices"] == details["top_slices"]
    # dropped in the image box, with a class to explain: still read as a scan, each top slice explains that class
    *_, summary, _, _, top = list(app.analyse(BrainMRIClassifier.from_pretrained(out), str(scan), target="Glioma"))[-1]
    assert "Whole scan: 5 axial slices" in summary and "of <b>Glioma</b>" in summary and len(top["value"]) == 4
    coronal = client.predict([handle_file(str(scan))], "Coronal", api_name="/predict_volume")
    with pytest.raises(Exception, match="Send the scan as uploaded files"):  # a path is never read
        client.predict([str(scan)], "axial", api_name="/predict_volume")
    assert coronal["plane"] == "coronal" and len(coronal["slices"]) == 96 and coronal["model"] == details["model"]
    with pytest.raises(Exception, match="no DICOM image"):
        import zipfile

        with zipfile.ZipFile(tmp_path / "notes.zip", "w") as z:
            z.writestr("notes.txt", "nothing")
        client.predict(dicom=handle_file(str(tmp_path / "notes.zip")), api_name="/predict")

"""End to end in a real headless browser: Debian's chromium driven by Playwright."""
from pathlib import Path

import pytest

from conftest import run_cli

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(answering_folder):
    import app
    from brain_mri import BrainMRIClassifier

    out, _ = answering_folder
    demo = app.build_demo(BrainMRIClassifier.from_pretrained(out))
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo, app.example_files()
    demo.close()


def shoot(page, name):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    assert (SCREENSHOTS / name).stat().st_size > 10_000


def test_upload_and_see_label_and_overlay(browser, served, tiny_data, tmp_path):
    from PIL import Image

    demo, examples = served
    root, _ = tiny_data
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(demo.local_url, wait_until="networkidle")
    assert "Medical disclaimer" in page.content() and "Weights in use" in page.content()
    images = [name for name in examples if not name.endswith(".dcm")]
    page.wait_for_function(  # a slow machine draws the thumbnails after the network is idle
        "names => names.every(n => [...document.images].some(i => decodeURIComponent(i.src).includes(n)))",
        arg=images, timeout=30_000)
    thumbnails = page.locator("img").evaluate_all("all => all.map(i => decodeURIComponent(i.src))")
    shown = [name for name in examples if not name.endswith(".dcm") and any(name in src for src in thumbnails)]
    assert shown == [name for name in examples if not name.endswith(".dcm")]  # every image example as a thumbnail
    big = Image.open(root / "Testing" / "glioma" / "Te-gl_0001.jpg").convert("L").resize((512, 640))
    big.save(tmp_path / "tall.png")  # taller than the slider's box: it must be fitted, not cropped
    page.locator("input[type=file]").first.set_input_files(str(tmp_path / "tall.png"))
    page.get_by_role("button", name="Analyse").click()
    page.get_by_text("Heatmap: ").wait_for(timeout=60_000)
    text = page.locator("body").inner_text()
    assert sum(name in text for name in ("Glioma", "Meningioma", "No tumour", "Pituitary tumour")) >= 4
    assert "Uploads are not stored" in text
    assert page.locator("img[src*='image.png'], img[src*='.png']").count() >= 2
    page.wait_for_timeout(500)
    boxes = page.evaluate(FITTED)
    assert len(boxes) == 2, boxes  # the upload and its overlay, each whole inside the slider's box
    for b in boxes:
        assert min(b["top"], b["bottom"], b["left"], b["right"]) >= -1 and b["nw"] == 512 and b["nh"] == 640, boxes
    shoot(page, "app.png")
    page.close()


def test_clicking_an_example_thumbnail_answers_it(browser, served):
    """An image example's thumbnail below the upload runs the analysis: the summary's probabilities and the
    Grad-CAM overlay appear (Gradio's lazy example cache once answered "Error" here)."""
    from brain_mri.config import DISPLAY_NAMES, true_class

    demo, examples = served
    name = next(n for n in examples if not n.endswith(".dcm"))
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(demo.local_url, wait_until="networkidle")
    thumbnail = page.locator(f"img[src*='{name}']").first
    thumbnail.wait_for(timeout=30_000)  # a slow machine draws the thumbnails after the network is idle
    thumbnail.click()
    page.get_by_text("True class of this example").wait_for(timeout=60_000)
    summary = page.locator("#answer-summary").inner_text()
    assert all(shown in summary for shown in DISPLAY_NAMES.values()) and "%" in summary, summary
    assert f"True class of this example: {DISPLAY_NAMES[true_class(name)]}" in summary and f"?example={name}" in summary
    page.wait_for_function(SLIDER_DRAWN, timeout=60_000)  # the example and its overlay, both loaded
    page.close()


SLIDER_DRAWN = """() => [...document.querySelectorAll('#answer-slider img')]
  .filter(i => i.complete && i.naturalWidth > 0).length == 2"""


# where each image of the slider lies in the slider's box (negative: cut off), and its own size
FITTED = """() => { const box = document.querySelector('#answer-slider').getBoundingClientRect();
  return [...document.querySelectorAll('#answer-slider img')].map(i => { const r = i.getBoundingClientRect();
    return {top: r.top - box.top, bottom: box.bottom - r.bottom, left: r.left - box.left, right: box.right - r.right,
            nw: i.naturalWidth, nh: i.naturalHeight}; }); }"""


def test_a_scan_shows_its_plot_and_top_slices(browser, served, tmp_path):
    from volume_files import example_slices, write_nifti

    demo, _ = served
    names = ["notumor_axial_1.jpg", "glioma_axial.jpg", "notumor_axial_2.jpg"]
    scan = write_nifti(tmp_path / "scan.nii.gz", example_slices(names, 128), spacing=(1.0, 1.0, 5.0))
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(demo.local_url, wait_until="networkidle")
    page.locator("#scan-input input[type=file]").set_input_files(str(scan))
    page.get_by_role("button", name="Analyse").click()
    page.get_by_text("of each slice's top class").wait_for(timeout=60_000)  # the heatmaps came
    text = page.locator("body").inner_text()
    assert "Whole scan: 3 axial slices" in text and "judges each slice on its own" in text
    assert page.locator("#scan-plot img").count() == 1 and page.locator("#scan-plot img").is_visible()
    assert page.locator("#scan-top img").count() >= 3
    page.wait_for_timeout(500)
    assert page.evaluate(GAP_UNDER_THUMBNAILS) < 30  # the top-slices box fits its thumbnails
    shoot(page, "app_scan.png")
    page.close()


GAP_UNDER_THUMBNAILS = """() => { const box = document.querySelector('#scan-top').getBoundingClientRect();
  return box.bottom - Math.max(...[...document.querySelectorAll('#scan-top img')].map(i => i.getBoundingClientRect().bottom)); }"""


def test_the_line_under_the_disclaimer_links_to_the_external_validation(browser):
    """The bundled model's card has the section (model/external.json): the page shows it, and the line links there."""
    import app
    from brain_mri import BrainMRIClassifier

    demo = app.build_demo(BrainMRIClassifier.from_pretrained(app.BUNDLED_MODEL), examples={})
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(demo.local_url, wait_until="networkidle")
    section = page.locator("#external-validation")
    section.wait_for(state="visible", timeout=30_000)  # a slow machine draws it after the network is idle
    assert not section.is_hidden() and section.bounding_box()["y"] > 900  # below the fold at first
    page.get_by_role("link", name="external validation").click()
    page.wait_for_timeout(500)
    box = section.bounding_box()
    assert -10 <= box["y"] < 900 and "chris_t1 as a DICOM series" in section.inner_text()  # scrolled to it
    page.close()
    demo.close()


def test_example_link_gallery_and_report(browser, served, tmp_path):
    import json

    from PIL import Image

    demo, examples = served
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(demo.local_url.rstrip("/") + "/?example=pituitary_sagittal.jpg", wait_until="networkidle")
    page.get_by_text("True class of this example").wait_for(timeout=60_000)  # no click needed
    assert "?example=pituitary_sagittal.jpg" in page.locator("body").inner_text()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_text("Download report (PNG)").click()
    path = tmp_path / "report.png"
    download.value.save_as(path)
    numbers = json.loads(Image.open(path).text["brain-mri"])
    assert set(numbers["probabilities"]) == {"glioma", "meningioma", "notumor", "pituitary"}
    assert numbers["file"] == "pituitary_sagittal.jpg" and numbers["model"].startswith("local model (")
    page.get_by_role("tab", name="Gallery").click()
    cards = page.locator("#example-gallery .thumbnail-item")
    cards.first.wait_for(timeout=60_000)
    assert cards.count() == len(examples)
    shoot(page, "gallery_tab.png")
    cards.nth(0).click()  # opens that example in the Analyse tab
    first = next(iter(examples))
    page.get_by_text(f"?example={first}").wait_for(timeout=60_000)
    page.close()


def test_static_gallery_opens_without_a_server(browser, answering_folder, tiny_data, tmp_path):

    out, _ = answering_folder
    root, _ = tiny_data
    site = tmp_path / "site"
    r = run_cli("gallery", "--model", out, root / "Testing", "--out", site)
    assert r.returncode == 0, r.stderr
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(site.joinpath("index.html").as_uri())
    cards = page.locator(".card")
    assert cards.count() == 12
    right, wrong, flagged = (page.locator(f".card.{s}").count() for s in ("right", "wrong", "flagged"))
    assert right + wrong + flagged == 12
    summary = page.locator(".summary").inner_text()
    assert f"{right} right" in summary and f"{wrong} wrong" in summary and "12 images" in summary
    assert f"{flagged} not taken for a brain MRI" in summary
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    shoot(page, "static_gallery.png")
    page.close()

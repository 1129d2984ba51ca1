"""End to end in a real headless browser: Debian's chromium driven by Playwright."""
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_upload_and_see_label_and_overlay(trained_folder, tiny_data):
    import app
    from brain_mri import BrainMRIClassifier

    out, _ = trained_folder
    root, _ = tiny_data
    demo = app.build_demo(BrainMRIClassifier.from_pretrained(out))
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(demo.local_url, wait_until="networkidle")
            assert "Medical disclaimer" in page.content()
            page.locator("input[type=file]").first.set_input_files(str(root / "Testing" / "glioma" / "Te-gl_0001.jpg"))
            page.get_by_role("button", name="Analyse").click()
            def image_of(block_label):
                return page.get_by_text(block_label, exact=True).locator("xpath=ancestor::div[.//img][1]//img").first

            overlay = image_of("Grad-CAM overlay")
            overlay.wait_for(state="visible", timeout=60_000)
            image_of("Your image").wait_for(state="visible", timeout=60_000)
            page.get_by_text("Heatmap: ").wait_for(timeout=60_000)
            panel = page.get_by_text("Prediction", exact=True).locator("xpath=ancestor::div[contains(., '%')][1]")
            text = panel.inner_text()
            assert sum(name in text for name in ("Glioma", "Meningioma", "No tumour", "Pituitary tumour")) >= 4
            assert overlay.get_attribute("src")
            SCREENSHOTS.mkdir(exist_ok=True)
            shot = SCREENSHOTS / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            browser.close()
    finally:
        demo.close()

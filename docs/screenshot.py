#!/usr/bin/env python
"""Takes the README's screenshot: the app on the bundled model answering one of the credited examples.

    python docs/screenshot.py [--example glioma_axial.jpg] [--out docs/screenshot.png]

Starts the app here (offline, on ./model), opens it in headless Chromium through Playwright (the ``test``
extra), clicks the example's card in the Gallery tab, which opens it in the Analyse tab, waits for the label
and the Grad-CAM overlay, and saves the top of the page as a 256-colour PNG. Chromium: Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it), else
Playwright's own (``playwright install chromium``). Only ``examples/`` images may appear in the picture.
"""
import argparse
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 1200  # the viewport: the picture
SHOWN = 0.35  # where the slider is left: the overlay shows on all but the image's left 35%


def serve():
    """The app on the bundled model, as ``python app.py --model model`` builds it: ``(demo, {example: path})``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import app
    from brain_mri import configure_threads

    configure_threads()
    clf, notice = app.load_model(str(app.BUNDLED_MODEL))
    demo = app.build_demo(clf, notice=notice)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, max_file_size=app.MAX_FILE_SIZE)
    return demo, app.example_files()


def shoot(url: str, example: str, index: int) -> bytes:
    """The page at ``url`` after a click on ``example``, the ``index``-th card of the Gallery tab, once its answer
    is drawn: PNG bytes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM) if CHROMIUM.exists() else None,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(url, wait_until="networkidle")
        page.get_by_role("tab", name="Gallery").click()
        card = page.locator("#example-gallery .thumbnail-item").nth(index)
        card.wait_for(timeout=300_000)  # the cards are drawn when the tab is first opened: every example explained
        card.click()
        page.get_by_text(f"?example={example}").wait_for(timeout=120_000)
        page.wait_for_function("() => [...document.querySelectorAll('#answer-slider img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length == 2", timeout=60_000)
        box = page.locator("#answer-slider").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * SHOWN, box["y"] + box["height"] / 2, steps=10)
        page.mouse.up()
        page.evaluate("() => window.scrollTo(0, 0)")
        page.wait_for_timeout(1000)  # the slider's fade-in
        png = page.screenshot()
        browser.close()
    return png


def small_png(png: bytes, out: Path) -> int:
    """Saves ``png`` with a 256-colour palette (a screenshot needs no more); returns the file's size."""
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(out, optimize=True)
    return out.stat().st_size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--example", default="glioma_axial.jpg", help="a file of examples/ (default %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = p.parse_args(argv)
    demo, examples = serve()
    if args.example not in examples:
        demo.close()
        p.error(f"no example called {args.example!r}; choose one of {', '.join(examples)}")
    try:
        size = small_png(shoot(demo.local_url, args.example, list(examples).index(args.example)), args.out)
    finally:
        demo.close()
    print(f"wrote {args.out} ({size / 1000:.0f} kB)")


if __name__ == "__main__":
    main()

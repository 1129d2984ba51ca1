"""Gradio demo: a brain MRI slice in, four class probabilities and a Grad-CAM overlay out.

    python app.py [--model FOLDER_OR_HUB_ID]
    (or BRAIN_MRI_MODEL=...; default: the Hub model named in README.md's front matter, else ./model)
"""
import argparse
import atexit
import html
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path

import gradio as gr

from brain_mri import DISCLAIMER, BrainMRIClassifier
from brain_mri.captions import caption, verdict
from brain_mri.config import CAM_METHODS, DICOM_EXTENSIONS, DISPLAY_NAMES, IMAGE_EXTENSIONS, true_class

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = HERE / "model"
MAX_FILE_SIZE = "20mb"
#: Gradio deletes its copies of uploads and outputs (reports included) every FREQUENCY s once they are AGE s old.
CACHE_DELETE = tuple(int(v) for v in os.environ.get("BRAIN_MRI_CACHE_DELETE", "300,1800").split(","))
logger = logging.getLogger("app")


def example_files(folder: Path = HERE / "examples") -> dict:
    """``{name: path}`` of the shareable example slices (images and DICOM), by file name."""
    return {p.name: p for p in sorted(folder.glob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS + DICOM_EXTENSIONS}


def example_inputs(path: Path) -> list:
    """``[image, dicom]``: the input an example file goes into."""
    return [None, str(path)] if path.suffix.lower() in DICOM_EXTENSIONS else [str(path), None]


class MRIImage(gr.Image):
    """gr.Image that hands the uploaded file over untouched (16-bit PNG kept, broken files
    reported by the handler with a plain message instead of failing in preprocessing)."""

    is_template = True

    def preprocess(self, payload):
        return None if payload is None or payload.path is None else str(payload.path)


def front_matter_model(readme: Path = HERE / "README.md") -> str | None:
    """The first ``models:`` entry of the README's front matter (the Space's model repo)."""
    from huggingface_hub import metadata_load

    try:
        return (metadata_load(readme) or {}).get("models", [None])[0]
    except (OSError, ValueError):
        return None


def load_model(requested: str | None) -> tuple[BrainMRIClassifier, str]:
    """``(classifier, notice)``: ``requested``, $BRAIN_MRI_MODEL or the front matter's Hub model;
    a Hub model that cannot be loaded (offline, missing) falls back to the bundled one, with a notice."""
    source = requested or os.environ.get("BRAIN_MRI_MODEL") or front_matter_model()
    notice = ""
    if source and not Path(source).expanduser().exists() and "/" in source:
        try:
            return BrainMRIClassifier.from_pretrained(source), ""
        except (OSError, ValueError, RuntimeError) as e:
            logger.warning("Cannot load %s (%s): using the bundled model", source, e)
            notice = f"The Hub model {source} could not be loaded ({e}); this page uses the bundled model."
            source = None
    try:
        return BrainMRIClassifier.from_pretrained(source or BUNDLED_MODEL), notice
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"error: cannot load the model {str(source or 'model')!r}: {e}\n"
                 "Pass --model with a local model folder (for example ./model) or set BRAIN_MRI_MODEL.")


@cache  # asked on every request; the answer never changes for a classifier
def model_name(clf: BrainMRIClassifier) -> str:
    """The model as the page names it: a Hub id, or "bundled model (...)"; never a server path."""
    if Path(clf.source).resolve() == BUNDLED_MODEL.resolve():
        return f"bundled model ({clf.describe()})"
    return clf.display_name()


def user_error(message: str) -> gr.Error:
    """The page's error for a bad input: the message once in the log (one line, no traceback), HTML-escaped
    on the page (Gradio renders it as HTML, and it may hold the upload's name)."""
    logger.info("rejected: %s", message)
    return gr.Error(html.escape(message, quote=False), print_exception=False)


def resolve_choice(value, options: dict, what: str, default: str) -> str:
    """An input given by id or by the name the page shows ("notumor" / "No tumour", "gradcam" / "Grad-CAM")."""
    if value in (None, ""):
        return default
    text = str(value).strip().casefold()
    for key, shown in options.items():
        if text in (key.casefold(), shown.casefold()):
            return key
    raise user_error(f"Unknown {what} {value!r}; choose one of {', '.join(options.values())}.")


TARGETS = {"predicted": "predicted class", **DISPLAY_NAMES}
METHODS = {k: name for k, (_, name) in CAM_METHODS.items()}


def analyse(clf: BrainMRIClassifier, image=None, dicom=None, method="gradcam", target="predicted", opacity=0.5,
            *, name: str | None = None):
    """Classifies one brain MRI slice and explains the answer.

    Returns the label (class probabilities), the image and its heatmap overlay at the upload's own
    size, a JSON summary (class ids -> probabilities, model, CAM method, explained class), the
    page's summary and a PNG report. An image that does not look like a brain MRI gets no label.
    """
    upload = dicom or image
    if not upload:
        raise user_error("Upload an MRI slice first (JPEG, PNG or DICOM).")
    method, target = resolve_choice(method, METHODS, "CAM method", "gradcam"), resolve_choice(target, TARGETS, "class", "predicted")
    file_name = name or Path(str(upload)).name
    try:
        e = clf.explain(upload, method=method, target=None if target == "predicted" else target, opacity=float(opacity))
    except ValueError as err:  # the user's file: say why in one line, with the name they gave it
        raise user_error(str(err)) from None  # messages name files, never their folders
    except Exception:  # a bug of ours: the log gets the traceback, the page one line
        logger.exception("analysing %s failed", file_name)
        raise gr.Error(f"Something went wrong while analysing {html.escape(file_name)}; it was logged. "
                       "Try another image.", print_exception=False) from None
    shown_name = model_name(clf)
    details = {"file": file_name, "probabilities": e.probabilities, "predicted": None if e.warning else e.predicted,
               "explained_class": e.target, "cam_method": method, "model": shown_name, "warning": e.warning}
    if e.warning:
        gr.Warning(e.warning)
    notes = ["Both a DICOM file and an image were given: the DICOM file was analysed."] if dicom and image else []
    from brain_mri.report import write_report

    folder, stem = new_output_folder(), Path(file_name).stem
    report = folder / f"{stem}_report.png"
    # the report and the two views are encoded at once: PNG encoding releases the GIL
    writing = ENCODERS.submit(write_report, e, shown_name, report, file_name)
    views = list(ENCODERS.map(save_png, (e.image, e.overlay), (folder / f"{stem}.png", folder / f"{stem}_cam.png")))
    writing.result()
    label = None if e.warning else {DISPLAY_NAMES[c]: p for c, p in e.probabilities.items()}
    return label, tuple(views), details, summary_html(details, name, notes), str(report)


ANSWERS = Path(tempfile.mkdtemp(prefix="brain-mri-answers-"))
ENCODERS = ThreadPoolExecutor(4, thread_name_prefix="png")
atexit.register(shutil.rmtree, ANSWERS, ignore_errors=True)


def new_output_folder(keep_seconds: float = 5) -> Path:
    """A fresh folder for one answer's files. Gradio copies them into its own cache (deleted on its
    schedule) as soon as the handler returns, so folders older than ``keep_seconds`` are removed here."""
    now = time.time()
    for old in ANSWERS.iterdir():
        try:
            stale = now - old.stat().st_mtime > keep_seconds
        except FileNotFoundError:  # another request removed it
            continue
        if stale:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=ANSWERS))


def save_png(array, path: Path) -> str:
    """Saves an image array as a fast PNG (zlib level 1: Gradio's own level 6 costs as much as the model)."""
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=1)
    return str(path)


def summary_html(details: dict, example: str | None, notes: list) -> str:
    """The page's answer: probabilities with one decimal, the heatmap's subject and a link to share."""
    d = details
    if d["warning"]:
        head = f"<h3>⚠️ No answer</h3><p>{html.escape(d['warning'])}</p>"
    else:
        rows = "".join(
            f"<tr><td>{'<b>' if c == d['predicted'] else ''}{DISPLAY_NAMES[c]}</td>"
            f"<td style='width:60%'><div style='background:#4a7dd6;height:12px;width:{p * 100:.1f}%'></div></td>"
            f"<td style='text-align:right'>{p:.1%}</td></tr>" for c, p in d["probabilities"].items())
        head = f"<h3>{DISPLAY_NAMES[d['predicted']]}</h3><table style='width:100%'>{rows}</table>"
    truth = true_class(example) if example else None
    if truth:
        notes.append(f"True class of this example: <b>{DISPLAY_NAMES[truth]}</b>{verdict(truth, d['predicted'], d['warning'])}")
    subject = "the top class, which is no answer" if d["warning"] else f"<b>{DISPLAY_NAMES[d['explained_class']]}</b>"
    notes.append(f"Heatmap: <b>{METHODS[d['cam_method']]}</b> of {subject} · "
                 f"model: {html.escape(d['model'])}")
    notes.append(f"Link to this result: <a href='?example={html.escape(example)}'>?example={html.escape(example)}</a>"
                 if example else "Uploads are not stored: download the report to share this result.")
    return head + "".join(f"<p>{n}</p>" for n in notes)


def gallery_cards(clf: BrainMRIClassifier, examples: dict) -> list:
    """One Gallery item per example: the slice beside its overlay, captioned with the true and predicted class."""
    import numpy as np

    cards = []
    for name, path in examples.items():
        e = clf.explain(path)
        cards.append((np.concatenate([e.image, e.overlay], axis=1),
                      caption(name, true_class(name), e.probabilities, e.warning)))
    return cards


def open_example(clf: BrainMRIClassifier, examples: dict, name: str | None):
    """Inputs and results of one example, by name (the Gallery's click and ``/?example=<name>``)."""
    path = examples.get(name or "")
    if path is None:
        if name:
            gr.Warning(f"No example called {html.escape(repr(name))}.")
        return (gr.update(),) * 7 + (gr.Tabs(),)
    inputs = example_inputs(path)
    return (*inputs, *analyse(clf, *inputs, name=name), gr.Tabs(selected="analyse"))


def build_demo(clf: BrainMRIClassifier, examples: dict | None = None, notice: str = "") -> gr.Blocks:
    examples = example_files() if examples is None else examples
    # cached example outputs belong to this demo's model: never to a previous run's, nor another demo's
    os.environ["GRADIO_EXAMPLES_CACHE"] = cached = tempfile.mkdtemp(prefix="brain-mri-examples-")
    atexit.register(shutil.rmtree, cached, ignore_errors=True)
    with gr.Blocks(title="Brain MRI tumour classifier", delete_cache=CACHE_DELETE) as demo:
        gr.Markdown("# Brain MRI tumour classifier with Grad-CAM\n"
                    "Drop a brain MRI slice: the model gives the probabilities of glioma, meningioma, "
                    "pituitary tumour and no tumour, and the heatmap shows what drove its answer.")
        gr.Markdown(f"> **Medical disclaimer.** {DISCLAIMER}")
        gr.Markdown(f"**Weights in use:** {model_name(clf)}" + (f"  \n⚠️ {notice}" if notice else ""))
        with gr.Tabs() as tabs:
            with gr.Tab("Analyse", id="analyse"):
                inputs, outputs = analyse_tab(partial(analyse, clf), examples)
            shown = [*inputs[:2], *outputs, tabs]  # what opening an example fills in
            if examples:
                with gr.Tab("Gallery", id="gallery") as tab:
                    gr.Markdown("Every example with its heatmap. Click a card to open it in the Analyse tab.")
                    gallery = gr.Gallery(columns=3, allow_preview=False, label="Examples", object_fit="contain",
                                         height="auto", elem_id="example-gallery")
                # drawn when the tab is first opened, once for all visitors: start-up stays fast
                tab.select(cache(partial(gallery_cards, clf, examples)), None, gallery, api_visibility="private")

                def on_select(evt: gr.SelectData):
                    return open_example(clf, examples, list(examples)[evt.index])

                gallery.select(on_select, None, shown, api_visibility="private")
        gr.Markdown(facts_markdown(clf))

        def on_load(request: gr.Request):  # /?example=<name> opens the page with that example analysed
            return open_example(clf, examples, dict(request.query_params).get("example"))

        demo.load(on_load, None, shown, api_visibility="private")
    return demo


def analyse_tab(run, examples: dict):
    """The upload and options beside the answer, the examples below; returns (inputs, outputs)."""
    with gr.Row():
        with gr.Column(scale=2):
            image = MRIImage(label="MRI slice (JPEG or PNG: drop, click or paste)", type="filepath",
                             sources=["upload", "clipboard"], image_mode=None, height=360)
            dicom = gr.File(label="…or a DICOM file (.dcm; analysed instead of the image when both are given)",
                            file_types=list(DICOM_EXTENSIONS), type="filepath")
            method = gr.Dropdown(list(METHODS.values()), value=METHODS["gradcam"], label="CAM method",
                                 allow_custom_value=True)
            target = gr.Dropdown(list(TARGETS.values()), value=TARGETS["predicted"], label="Explain class",
                                 allow_custom_value=True)
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
            button = gr.Button("Analyse", variant="primary")
        with gr.Column(scale=3):
            summary = gr.HTML(label="Summary")
            views = gr.ImageSlider(label="Your image | Grad-CAM overlay (drag to compare)", type="numpy",
                                   format="png", height=560, max_height=900)
            report = gr.DownloadButton("Download report (PNG)", variant="secondary")
            label = gr.Label(label="Label", visible=False)
            details = gr.JSON(label="Details", visible=False)
    inputs, outputs = [image, dicom, method, target, opacity], [label, views, details, summary, report]
    button.click(run, inputs, outputs, api_name="predict",
                 api_description="Classify a brain MRI slice (JPEG, PNG or DICOM) and explain the answer.")
    if examples:
        gr.Examples([example_inputs(p) for p in examples.values()],
                    inputs=[image, dicom], outputs=outputs, fn=run, cache_examples=True, cache_mode="lazy",
                    example_labels=[f"{n} ({DISPLAY_NAMES[true_class(n)]})" if true_class(n) else n for n in examples],
                    label="Examples (true class in brackets)", examples_per_page=16)
    return inputs, outputs


def facts_markdown(clf: BrainMRIClassifier) -> str:
    facts = clf.facts()
    lines = [f"**Model:** {model_name(clf)}" + (f" · `{facts['arch']}`" if facts["arch"] else "")
             + (f", fine-tuned from ImageNet weights ({facts['initialisation']})" if facts["initialisation"] else "")]
    if facts["dataset"]:
        lines.append(f"**Trained on:** {facts['dataset']} (Kaggle Brain Tumor MRI Dataset, deduplicated)")
    for split, m in facts["metrics"].items():
        lines.append(f"**{split}:** " + ", ".join(f"{k} {v:.2%}" for k, v in m.items()))
    return "  \n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder or Hub repo id (default: $BRAIN_MRI_MODEL, README's models:, ./model)")
    p.add_argument("--queue-size", type=int, default=64, help="requests waiting beyond this get 'busy, try again'")
    p.add_argument("--concurrency", type=int, default=2, help="requests analysed at once (default %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from brain_mri import configure_threads

    logger.info("torch threads: %d (set BRAIN_MRI_THREADS to change)", configure_threads())
    clf, notice = load_model(args.model)
    demo = build_demo(clf, notice=notice)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency).launch(max_file_size=MAX_FILE_SIZE)


if __name__ == "__main__":
    main()

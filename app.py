"""Gradio demo: a brain MRI slice in, four class probabilities and a Grad-CAM overlay out.

    python app.py [--model FOLDER_OR_HUB_ID]
    (or BRAIN_MRI_MODEL=...; default: the Hub model named in README.md's front matter, else ./model)
"""
import argparse
import html
import logging
import os
import sys
from functools import cache, partial
from pathlib import Path

import gradio as gr
from gradio import FileData

from brain_mri import DISCLAIMER, BrainMRIClassifier
from brain_mri.config import DICOM_EXTENSIONS, DISPLAY_NAMES
from brain_mri.io.volumes import PLANES, VOLUME_SUFFIXES, is_volume, read_volume
from brain_mri.serving.answers import ENCODERS, new_output_folder, save_png, uploaded_files
from brain_mri.serving.captions import slice_caption
from brain_mri.serving.examples import example_cards, example_files, example_inputs, example_name
from brain_mri.serving.page import METHODS, facts_markdown, limits_markdown, scan_html, summary_html

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = HERE / "model"
MAX_FILE_SIZE = "20mb"
#: Gradio deletes its copies of uploads and outputs (reports included) every FREQUENCY s once they are AGE s old.
CACHE_DELETE = tuple(int(v) for v in os.environ.get("BRAIN_MRI_CACHE_DELETE", "300,1800").split(","))
logger = logging.getLogger("app")


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


def load_model(requested: str | None) -> tuple[BrainMRIClassifier, tuple[str, str]]:
    """``(classifier, (notice, detail))``: ``requested``, $BRAIN_MRI_MODEL or the front matter's Hub model;
    a Hub model that cannot be loaded (offline, missing) falls back to the bundled one, with a one-line
    notice for visitors and the reason as the detail."""
    source = requested or os.environ.get("BRAIN_MRI_MODEL") or front_matter_model()
    notice = ("", "")
    if source and not Path(source).expanduser().exists() and "/" in source:
        try:
            return BrainMRIClassifier.from_pretrained(source), notice
        except (OSError, ValueError, RuntimeError) as e:
            logger.warning("Cannot load %s (%s): using the bundled model", source, e)
            notice = (f"The Hub model {source} could not be loaded: this page uses the bundled model.", str(e))
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


PLANE_NAMES = {p: p.capitalize() for p in PLANES}
HIDDEN = gr.update(visible=False)


def analyse(clf: BrainMRIClassifier, image=None, dicom=None, method="gradcam", target="predicted", opacity=0.5,
            plane="axial", *, name: str | None = None):
    """Classifies one brain MRI slice, or every slice of a whole scan, and explains the answer.

    A slice gives the label (class probabilities), the image and its heatmap overlay at the upload's own
    size, a JSON summary (class ids -> probabilities, model, CAM method, explained class), the page's
    summary and a PNG report. A scan (NIfTI, a zip of a DICOM series, multi-frame DICOM) also gives the
    plot of the probabilities along its slices and its top slices with their overlays; its JSON holds
    every slice. An image that does not look like a brain MRI gets no label.
    """
    upload = dicom or image
    if not upload:
        raise user_error("Upload an MRI slice first (JPEG, PNG or DICOM), or a whole scan (NIfTI, DICOM zip).")
    method, target = resolve_choice(method, METHODS, "CAM method", "gradcam"), resolve_choice(target, TARGETS, "class", "predicted")
    scan = dicom if dicom and is_volume(dicom) else image if image and not dicom and is_volume(image) else None
    if scan:  # a scan dropped in the image box is read as one too
        yield from analyse_scan(clf, scan, method, resolve_choice(plane, PLANE_NAMES, "plane", "axial"), float(opacity),
                                name or Path(str(scan)).name, image if scan == dicom else None, target)
        return
    yield (*analyse_slice(clf, image, dicom, method, target, opacity, name=name), HIDDEN, HIDDEN)


def failing_politely(file_name: str, work, *args, **kwargs):
    """``work(*args, **kwargs)``; a ValueError (the user's file) becomes one line on the page, any other error
    is logged with its traceback and the page says only that it was."""
    try:
        return work(*args, **kwargs)
    except ValueError as err:  # the user's file: say why in one line, with the name they gave it
        raise user_error(str(err)) from None  # messages name files, never their folders
    except Exception:  # a bug of ours: the log gets the traceback, the page one line
        logger.exception("analysing %s failed", file_name)
        raise gr.Error(f"Something went wrong while analysing {html.escape(file_name)}; it was logged. "
                       "Try another file.", print_exception=False) from None


def analyse_slice(clf: BrainMRIClassifier, image, dicom, method: str, target: str, opacity, *, name: str | None = None):
    """One slice: ``(label, views, details, summary, report)`` (see :func:`analyse`)."""
    upload = dicom or image
    name = name or example_name(upload, HERE / "examples")
    file_name = name or Path(str(upload)).name
    e = failing_politely(file_name, clf.explain, upload, method=method,
                         target=None if target == "predicted" else target, opacity=float(opacity))
    shown_name = model_name(clf)
    details = {"file": file_name, "probabilities": e.probabilities, "predicted": None if e.warning else e.predicted,
               "explained_class": e.target, "cam_method": method, "model": shown_name, "warning": e.warning}
    if e.warning:
        gr.Warning(e.warning)
    notes = ["Both a DICOM file and an image were given: the DICOM file was analysed."] if dicom and image else []
    from brain_mri.serving.report import write_report

    folder, stem = new_output_folder(), Path(file_name).stem
    report = folder / f"{stem}_report.png"
    # the report and the two views are encoded at once: PNG encoding releases the GIL
    writing = ENCODERS.submit(write_report, e, shown_name, report, file_name)
    views = list(ENCODERS.map(save_png, (e.image, e.overlay), (folder / f"{stem}.png", folder / f"{stem}_cam.png")))
    writing.result()
    label = None if e.warning else {DISPLAY_NAMES[c]: p for c, p in e.probabilities.items()}
    return label, tuple(views), details, summary_html(details, name, notes), str(report)


TOP_SLICES = 4  # the slices of a scan shown with their heatmaps


def analyse_scan(clf: BrainMRIClassifier, path, method: str, plane: str, opacity: float, file_name: str, image=None,
                 target: str = "predicted"):
    """A whole scan (see :func:`analyse`): yields the scores, the plot and the top slices first, then the same
    with the top slices' heatmaps and the report."""
    from brain_mri.serving.report import probability_plot, write_volume_report
    from brain_mri.serving.scans import top_slices

    volume = failing_politely(file_name, read_volume, path)
    volume.name = file_name  # the upload's own name, not the server's copy
    a = failing_politely(file_name, clf.assess_volume, volume, plane, top=0)
    ranked, folder = top_slices(a.slices, TOP_SLICES), new_output_folder()
    details = {**a.to_dict(), "top_slices": ranked, "cam_method": method, "model": model_name(clf)}
    notes = ["Both an image and a scan were given: the scan was analysed."] if image else []
    if len(a.flagged) == len(a.slices):
        gr.Warning("No slice of this scan was taken for a brain MRI slice, so there is no answer.")
    curves = probability_plot(a, ranked)  # ranked are the slices explain_top explains: drawn once, for both
    plot = save_png(curves, folder / "plot.png")
    firsts = [volume.slice(i, plane) for i in ranked]
    slider = (firsts[0], firsts[0]) if firsts else None
    yield (None, slider, details, scan_html(details, notes + ["Heatmaps of the top slices: being computed…"]),
           None, gr.update(value=plot, visible=True),
           gr.update(value=[(im, f"slice {i}") for i, im in zip(ranked, firsts)], visible=bool(ranked)))
    failing_politely(file_name, clf.explain_top, volume, a, TOP_SLICES, method, opacity,
                     None if target == "predicted" else target)
    # a fresh folder: the first one may be older than new_output_folder's few seconds by now
    report = new_output_folder() / f"{Path(file_name).name.split('.')[0]}_report.png"
    write_volume_report(a, curves, details["model"], report)
    top = [(e.overlay, slice_caption(i, e)) for i, e in a.top]
    subject = "each slice's top class" if target == "predicted" else f"<b>{DISPLAY_NAMES[target]}</b>"
    notes.append(f"Heatmap: <b>{METHODS[method]}</b> of {subject} · model: {html.escape(details['model'])}")
    yield (None, (a.top[0][1].image, a.top[0][1].overlay) if a.top else None, details, scan_html(details, notes),
           str(report), gr.update(value=plot, visible=True), gr.update(value=top, visible=bool(top)))


def open_example(clf: BrainMRIClassifier, examples: dict, name: str | None):
    """Inputs and results of one example, by name (the Gallery's click and ``/?example=<name>``)."""
    path = examples.get(name or "")
    if path is None:
        if name:
            gr.Warning(f"No example called {html.escape(repr(name))}.")
        return (gr.update(),) * 9 + (gr.Tabs(),)
    inputs = example_inputs(path)
    return (*inputs, *analyse_slice(clf, *inputs, "gradcam", "predicted", 0.5, name=name), HIDDEN, HIDDEN,
            gr.Tabs(selected="analyse"))


def build_demo(clf: BrainMRIClassifier, examples: dict | None = None, notice: tuple = ("", "")) -> gr.Blocks:
    examples = example_files(HERE / "examples") if examples is None else examples
    with gr.Blocks(title="Brain MRI tumour classifier", delete_cache=CACHE_DELETE) as demo:
        gr.Markdown("# Brain MRI tumour classifier with Grad-CAM\n"
                    "Drop a brain MRI slice: the model gives the probabilities of glioma, meningioma, "
                    "pituitary tumour and no tumour, and the heatmap shows what drove its answer.")
        gr.Markdown(f"> **Medical disclaimer.** {DISCLAIMER}")
        facts = clf.facts()
        gr.Markdown(limits_markdown(bool(facts["external"])))
        gr.Markdown(f"**Weights in use:** {model_name(clf)}" + (f" · ⚠️ {notice[0]}" if notice[0] else ""))
        if notice[1]:  # the reason, for those who ask: one click away
            with gr.Accordion("Why the bundled model?", open=False):
                gr.Markdown(html.escape(notice[1]))
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
                tab.select(cache(partial(example_cards, clf, examples)), None, gallery, api_visibility="private")

                def on_select(evt: gr.SelectData):
                    return open_example(clf, examples, list(examples)[evt.index])

                gallery.select(on_select, None, shown, api_visibility="private")
        gr.Markdown(facts_markdown(facts, model_name(clf)))
        if facts["external"]:  # the card's section, where the sentence under the disclaimer links
            with gr.Accordion("External validation: brain MRI from outside the Kaggle set", elem_id="external-validation"):
                gr.Markdown(facts["external"])

        def on_load(request: gr.Request):  # /?example=<name> opens the page with that example analysed
            return open_example(clf, examples, dict(request.query_params).get("example"))

        demo.load(on_load, None, shown, api_visibility="private")

        def predict_volume(files: list[FileData], plane: str = "axial") -> dict:
            """Scores every slice of a whole scan: a NIfTI file, a zip of one DICOM series, a multi-frame
            DICOM, or several DICOM files of one series. Returns per-slice probabilities, the flagged and
            top slices and the summary (the model judges slices, not patients)."""
            return scan_json(clf, files, plane)

        gr.api(predict_volume, api_name="predict_volume")
    return demo


def scan_json(clf: BrainMRIClassifier, files: list, plane: str) -> dict:
    """The ``predict_volume`` endpoint's answer (:meth:`~brain_mri.serving.scans.VolumeAssessment.to_dict`, the model)."""
    from gradio.utils import get_upload_folder

    from brain_mri.serving.scans import top_slices

    paths, name = failing_politely("the upload", uploaded_files, files, Path(get_upload_folder()))
    volume = failing_politely(name, read_volume, paths if len(paths) > 1 else paths[0])
    volume.name = name
    a = failing_politely(name, clf.assess_volume, volume, resolve_choice(plane, PLANE_NAMES, "plane", "axial"), top=0)
    return {**a.to_dict(), "top_slices": top_slices(a.slices, TOP_SLICES), "model": model_name(clf)}


def analyse_tab(run, examples: dict):
    """The upload and options beside the answer, the examples below; returns (inputs, outputs)."""
    with gr.Row():
        with gr.Column(scale=2):
            image = MRIImage(label="MRI slice (JPEG or PNG: drop, click or paste)", type="filepath",
                             sources=["upload", "clipboard"], image_mode=None, height=360)
            dicom = gr.File(label="…or a DICOM file, or a whole scan: NIfTI (.nii, .nii.gz), a DICOM series as a .zip, "
                                  "or a multi-frame DICOM (analysed instead of the image when both are given)",
                            file_types=[*DICOM_EXTENSIONS, *VOLUME_SUFFIXES, ".gz"], type="filepath", elem_id="scan-input")
            plane = gr.Dropdown(list(PLANE_NAMES.values()), value=PLANE_NAMES["axial"], label="Plane (whole scans)")
            method = gr.Dropdown(list(METHODS.values()), value=METHODS["gradcam"], label="CAM method",
                                 allow_custom_value=True)
            target = gr.Dropdown(list(TARGETS.values()), value=TARGETS["predicted"], label="Explain class",
                                 allow_custom_value=True)
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
            button = gr.Button("Analyse", variant="primary")
        with gr.Column(scale=3):
            summary = gr.HTML(label="Summary", elem_id="answer-summary")
            # max_height below height: the images are fitted whole in the box (wheel or pinch zooms in)
            views = gr.ImageSlider(label="Your image | Grad-CAM overlay (drag to compare; scroll to zoom)",
                                   type="numpy", format="png", height=560, max_height=520, elem_id="answer-slider")
            plot = gr.Image(label="Class probabilities along the scan", visible=False, elem_id="scan-plot",
                            buttons=["download", "fullscreen"], show_label=False)  # the plot has its title
            top = gr.Gallery(label="Top slices (highest tumour probability) with their heatmaps", visible=False,
                             columns=4, object_fit="contain", height="fit-content", elem_id="scan-top")
            report = gr.DownloadButton("Download report (PNG)", variant="secondary")
            label = gr.Label(label="Label", visible=False)
            details = gr.JSON(label="Details", visible=False)
    inputs = [image, dicom, method, target, opacity, plane]
    outputs = [label, views, details, summary, report, plot, top]
    button.click(run, inputs, outputs, api_name="predict",
                 api_description="Classify a brain MRI slice (JPEG, PNG or DICOM) or every slice of a whole scan "
                                 "(NIfTI, DICOM series zip, multi-frame DICOM) and explain the answer.")
    for kind, column in (("image", 0), ("DICOM", 1)):  # thumbnails: one set per input (labels would hide them)
        rows = [[example_inputs(p)[column]] for p in examples.values() if example_inputs(p)[column]]
        if rows:
            # run on click, not cached: Gradio's lazy cache fails on our gr.update() outputs (it builds their
            # components inside the click's event context: "'Image' object has no attribute 'info'")
            gr.Examples(rows, inputs=[(image, dicom)[column]], outputs=outputs, fn=run, cache_examples=False,
                        run_on_click=True, label=f"Examples ({kind}; the file name says the true class)",
                        examples_per_page=16)
    return inputs, outputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder or Hub repo id (default: $BRAIN_MRI_MODEL, README's models:, ./model)")
    p.add_argument("--queue-size", type=int, default=64, help="requests waiting beyond this get 'busy, try again'")
    p.add_argument("--concurrency", type=int, default=2, help="requests analysed at once (default %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)  # its decoder tracebacks: we log one line per rejection
    from brain_mri import configure_threads

    logger.info("torch threads: %d (set BRAIN_MRI_THREADS to change)", configure_threads())
    clf, notice = load_model(args.model)
    demo = build_demo(clf, notice=notice)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency).launch(max_file_size=MAX_FILE_SIZE)


if __name__ == "__main__":
    main()

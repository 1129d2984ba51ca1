"""Gradio demo: a brain MRI slice in, four class probabilities and a Grad-CAM overlay out.

    python app.py [--model FOLDER_OR_HUB_ID]      (or BRAIN_MRI_MODEL=...; default: ./model)
"""
import argparse
import os
import sys
from functools import partial
from pathlib import Path

import gradio as gr

from brain_mri import DISCLAIMER, BrainMRIClassifier
from brain_mri.config import CAM_METHODS, CLASS_NAMES, DISPLAY_NAMES, IMAGE_EXTENSIONS

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = HERE / "model"
MAX_FILE_SIZE = "20mb"
EXAMPLES = sorted(str(p) for p in (HERE / "examples").glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS + (".dcm",))


class MRIImage(gr.Image):
    """gr.Image that hands the uploaded file over untouched (16-bit PNG kept, broken files
    reported by the handler with a plain message instead of failing in preprocessing)."""

    is_template = True

    def preprocess(self, payload):
        return None if payload is None or payload.path is None else str(payload.path)


def load_model(source: str | None) -> BrainMRIClassifier:
    source = source or os.environ.get("BRAIN_MRI_MODEL") or str(BUNDLED_MODEL)
    try:
        return BrainMRIClassifier.from_pretrained(source)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"error: cannot load the model {source!r}: {e}\n"
                 f"Pass --model with a local model folder (for example {BUNDLED_MODEL}) or set BRAIN_MRI_MODEL.")


def facts_markdown(clf: BrainMRIClassifier) -> str:
    facts = clf.facts()
    lines = [f"**Model:** [{clf.source}]({facts['link']})" + (f" · `{facts['arch']}`" if facts["arch"] else "")]
    if facts["dataset"]:
        lines.append(f"**Trained on:** {facts['dataset']} (Kaggle Brain Tumor MRI Dataset, deduplicated)")
    for split, m in facts["metrics"].items():
        lines.append(f"**{split}:** " + ", ".join(f"{k} {v:.2%}" for k, v in m.items()))
    return "  \n".join(lines)


def analyse(clf: BrainMRIClassifier, image, dicom, method, target, opacity):
    """The Analyse button: (label, the upload, its CAM overlay at the upload's size, note).

    A bad upload raises ``gr.Error`` with a plain message; an image that does not look like a
    brain MRI slice gets a warning instead of a label.
    """
    upload = dicom or image
    if not upload:
        raise gr.Error("Upload an MRI slice first (JPEG, PNG or DICOM).")
    try:
        result = clf.explain(upload, method=method, target=None if target == "predicted" else target,
                             opacity=float(opacity))
    except ValueError as e:
        raise gr.Error(str(e)) from None
    note = f"Heatmap: **{CAM_METHODS[method][1]}** for **{DISPLAY_NAMES[result.target]}**."
    if result.warning:
        gr.Warning(result.warning)
        return None, result.image, result.overlay, f"### ⚠️ {result.warning}\n\n{note}"
    label = {DISPLAY_NAMES[c]: p for c, p in result.probabilities.items()}
    return label, result.image, result.overlay, note


def build_demo(clf: BrainMRIClassifier, examples: list[str] | None = None) -> gr.Blocks:
    examples = EXAMPLES if examples is None else examples

    with gr.Blocks(title="Brain MRI tumour classifier") as demo:
        gr.Markdown("# Brain MRI tumour classifier with Grad-CAM\n"
                    "Drop a brain MRI slice: the model gives the probabilities of glioma, meningioma, "
                    "pituitary tumour and no tumour, and the heatmap shows what drove its answer.")
        gr.Markdown(f"> **Medical disclaimer.** {DISCLAIMER}")
        with gr.Row():
            with gr.Column():
                image = MRIImage(label="MRI slice (JPEG or PNG: drop, click or paste)", type="filepath",
                                 sources=["upload", "clipboard"], image_mode=None, height=320)
                dicom = gr.File(label="…or a DICOM file (.dcm)", file_types=[".dcm", ".dicom"], type="filepath")
                method = gr.Dropdown([(name, k) for k, (_, name) in CAM_METHODS.items()], value="gradcam",
                                     label="CAM method")
                target = gr.Dropdown([("predicted class", "predicted")] + [(DISPLAY_NAMES[c], c) for c in CLASS_NAMES],
                                     value="predicted", label="Explain class")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
                button = gr.Button("Analyse", variant="primary")
            with gr.Column():
                label = gr.Label(num_top_classes=len(CLASS_NAMES), label="Prediction")
                note = gr.Markdown()
                with gr.Row():
                    seen = gr.Image(label="Your image", format="png", interactive=False, height=420)
                    overlay = gr.Image(label="Grad-CAM overlay", format="png", interactive=False, height=420)
        button.click(partial(analyse, clf), [image, dicom, method, target, opacity], [label, seen, overlay, note],
                     api_name="predict")
        if examples:
            gr.Examples(examples, inputs=[image], label="Examples")
        gr.Markdown(facts_markdown(clf))
    return demo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder or Hub repo id (default: $BRAIN_MRI_MODEL or ./model)")
    args = p.parse_args(argv)
    demo = build_demo(load_model(args.model))
    demo.queue(default_concurrency_limit=2).launch(max_file_size=MAX_FILE_SIZE)


if __name__ == "__main__":
    main()

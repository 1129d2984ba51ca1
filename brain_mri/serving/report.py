"""A one-page PNG report of an explained prediction: image, overlay, probabilities, model, method, disclaimer."""
from __future__ import annotations

import textwrap
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .captions import slice_caption
from ..config import CAM_METHODS, CLASS_NAMES, DISCLAIMER, DISPLAY_NAMES

SIDE = 384  # each picture's box in the report
MARGIN = 24


def render_report(explanation, model_name: str, file_name: str | None = None) -> Image.Image:
    """The report as an RGB image (save it as PNG).

    Args:
        explanation: an :class:`~brain_mri.serving.explain.Explanation`.
        model_name: how to name the model (a Hub id or "bundled model (...)"), never a server path.
        file_name: the upload's own name, if any.
    """
    e = explanation
    font = _font(16)
    page = _template(CAM_METHODS[e.method][1]).copy()
    draw = ImageDraw.Draw(page)
    top = 2.6 * MARGIN
    for k, array in enumerate((e.image, e.overlay)):
        picture = Image.fromarray(np.asarray(array, dtype=np.uint8))
        scale = SIDE / max(picture.size)  # small slices are enlarged, large ones reduced
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
        page.paste(picture, (MARGIN + k * (SIDE + MARGIN), int(top + MARGIN)))
    y = int(top + SIDE + 2 * MARGIN)
    if e.warning:
        draw.multiline_text((MARGIN, y), "\n".join(textwrap.wrap("No answer: " + e.warning, 90)), fill="#a40", font=font)
        y += 3 * MARGIN
    else:
        y = _probability_rows(draw, e.probabilities, e.predicted, y, font)
    subject = "the top class, which is no answer" if e.warning else DISPLAY_NAMES[e.target]
    facts = [f"Model: {model_name}", f"Heatmap: {CAM_METHODS[e.method][1]} of {subject}"]
    if file_name:
        facts.insert(0, f"File: {file_name}")
    draw.multiline_text((MARGIN, y + MARGIN // 2), "\n".join(facts), fill="black", font=font, spacing=6)
    return page


@cache
def _template(method_name: str) -> Image.Image:
    """The page's fixed text (title, picture titles, disclaimer): drawing text costs more than the rest."""
    page = Image.new("RGB", (2 * SIDE + 3 * MARGIN, SIDE + 17 * MARGIN), "white")
    draw = ImageDraw.Draw(page)
    draw.text((MARGIN, MARGIN), "Brain MRI tumour classifier: report", fill="black", font=_font(22))
    for k, title in enumerate(("Image", f"{method_name} overlay")):
        draw.text((MARGIN + k * (SIDE + MARGIN), 2.6 * MARGIN), title, fill="black", font=_font(16))
    wrapped = "\n".join(textwrap.wrap(DISCLAIMER, 95))
    draw.multiline_text((MARGIN, page.height - 4 * MARGIN), wrapped, fill="#555", font=_font(13))
    return page


@cache
def _font(size: int):
    return ImageFont.load_default(size)  # a TrueType font: loading it costs more than drawing


def _probability_rows(draw, probabilities: dict, best: str, y: int, font) -> int:
    """One row per class: name, a bar and the probability with one decimal; returns the next y."""
    for c in CLASS_NAMES:
        p = probabilities[c]
        name = DISPLAY_NAMES[c] + (" (predicted)" if c == best else "")
        draw.text((MARGIN, y), name, fill="black", font=font)
        draw.rectangle([MARGIN + 220, y + 3, MARGIN + 220 + int(360 * p), y + 17], fill="#36c" if c == best else "#9ab")
        draw.text((MARGIN + 600, y), f"{p:.1%}", fill="black", font=font)
        y += 26
    return y


def write_report(explanation, model_name: str, path, file_name: str | None = None) -> None:
    """Saves :func:`render_report` as a PNG that also carries the numbers as text (``brain-mri`` chunk, JSON)."""
    e = explanation
    _save(render_report(e, model_name, file_name), path, {
        "file": file_name, "model": model_name, "probabilities": e.probabilities, "cam_method": e.method,
        "explained_class": e.target, "warning": e.warning, "disclaimer": DISCLAIMER})


def _save(page: Image.Image, path, numbers: dict) -> None:
    """A PNG with ``numbers`` as JSON in its ``brain-mri`` text chunk; zlib level 1 (level 6 cost 4x the model)."""
    import json

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("brain-mri", json.dumps(numbers))
    page.save(path, pnginfo=info, compress_level=1)

def probability_plot(assessment, marked=None, width: int = 900, height: int = 300) -> np.ndarray:
    """The four class probabilities along a scan's slices, flagged slices shaded, the ``marked`` slices
    (default: the explained top slices) dotted; an RGB array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    index = np.arange(len(assessment.slices))
    for c, colour in zip(CLASS_NAMES, ("#d62728", "#1f77b4", "#7f7f7f", "#2ca02c")):
        # a slice with no answer shows no probability: a gap in the line, over its shading
        values = [np.nan if s["warning"] else s["probabilities"][c] for s in assessment.slices]
        ax.plot(index, values, color=colour, lw=1.5, marker="." if len(index) < 40 else None, label=DISPLAY_NAMES[c])
    for k in assessment.flagged:
        ax.axvspan(k - 0.5, k + 0.5, color="#f2c48d", alpha=0.6, lw=0)
    for k in ([i for i, _ in assessment.top] if marked is None else marked):
        ax.axvline(k, color="black", ls=":", lw=1)
    ax.set(xlim=(-0.5, max(len(index) - 0.5, 0.5)), ylim=(0, 1), xlabel=f"{assessment.plane} slice",
           ylabel="probability", title="Class probabilities per slice (shaded: no answer; dotted: slices shown)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    canvas = FigureCanvasAgg(fig)  # no pyplot: no global state shared between requests
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_volume_report(assessment, plot: np.ndarray, model_name: str) -> Image.Image:
    """A scan's report: the probability plot, the top slices with their overlays, the summary, model, disclaimer."""
    font, side = _font(15), 200
    top = assessment.top
    width = max(plot.shape[1], len(top) * (side + MARGIN)) + 2 * MARGIN
    summary = textwrap.wrap(assessment.summary(), 110)
    height = 3 * MARGIN + plot.shape[0] + (2 * side + 3 * MARGIN if top else 0) + 20 * (len(summary) + 6) + 4 * MARGIN
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    draw.text((MARGIN, MARGIN), f"Brain MRI tumour classifier: report on {assessment.name}", fill="black", font=_font(22))
    page.paste(Image.fromarray(plot), (MARGIN, 3 * MARGIN))
    y = 3 * MARGIN + plot.shape[0] + MARGIN
    for k, (index, e) in enumerate(top):
        x = MARGIN + k * (side + MARGIN)
        draw.text((x, y), slice_caption(index, e), fill="black", font=font)
        for row, array in enumerate((e.image, e.overlay)):
            picture = Image.fromarray(np.asarray(array, dtype=np.uint8))
            picture.thumbnail((side, side))
            page.paste(picture, (x, y + MARGIN + row * (side + 4)))
    y += (2 * side + 3 * MARGIN) if top else 0
    method = CAM_METHODS[top[0][1].method][1] if top else "-"
    own = all(e.target == e.predicted for _, e in top)
    subject = "each slice's top class" if own else DISPLAY_NAMES[top[0][1].target]
    lines = [*summary, "", f"Model: {model_name}", f"Heatmaps: {method} of {subject}", "",
             *textwrap.wrap(DISCLAIMER, 110)]
    draw.multiline_text((MARGIN, y), "\n".join(lines), fill="black", font=font, spacing=5)
    return page


def write_volume_report(assessment, plot: np.ndarray, model_name: str, path) -> None:
    """Saves :func:`render_volume_report` as a PNG that also carries the per-slice numbers (``brain-mri`` chunk, JSON)."""
    _save(render_volume_report(assessment, plot, model_name), path,
          {**assessment.to_dict(), "model": model_name, "disclaimer": DISCLAIMER})

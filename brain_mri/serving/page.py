"""The page's answer as HTML and Markdown (slice, scan, model facts): no gradio, no torch."""
from __future__ import annotations

import html

from .captions import verdict
from ..config import CAM_METHODS, DISPLAY_NAMES, OUTSIDE_KAGGLE, true_class

METHODS = {k: name for k, (_, name) in CAM_METHODS.items()}


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


def scan_html(details: dict, notes: list) -> str:
    """The page's answer for a scan: the summary, its top slices, and how to share it."""
    rows = "".join(f"<tr><td>slice {i}</td><td>{DISPLAY_NAMES[s['predicted']]}</td>"
                   f"<td style='text-align:right'>{s['tumour_probability']:.1%}</td></tr>"
                   for i in details["top_slices"] for s in [details["slices"][i]])
    table = (f"<table style='width:100%'><tr><th>Top slices</th><th>top class</th><th style='text-align:right'>"
             f"tumour probability</th></tr>{rows}</table>") if rows else ""
    notes = notes + ["Uploads are not stored: download the report to share this result."]
    return (f"<h3>Whole scan: {len(details['slices'])} {details['plane']} slices</h3>"
            f"<p>{html.escape(details['summary'])}</p>{table}" + "".join(f"<p>{n}</p>" for n in notes))


def facts_markdown(facts: dict, model: str) -> str:
    """What the model's card says of it, in a few Markdown lines (``facts``: :meth:`BrainMRIClassifier.facts`)."""
    lines = [f"**Model:** {model}" + (f" · `{facts['arch']}`" if facts["arch"] else "")
             + (f", fine-tuned from ImageNet weights ({facts['initialisation']})" if facts["initialisation"] else "")]
    if facts["dataset"]:
        lines.append(f"**Trained on:** {facts['dataset']} (Kaggle Brain Tumor MRI Dataset, deduplicated)")
    for split, m in facts["metrics"].items():
        lines.append(f"**{split}:** " + ", ".join(f"{k} {v:.2%}" for k, v in m.items()))
    return "  \n".join(lines)


def limits_markdown(linked: bool) -> str:
    """The line under the disclaimer: what the external validation found, linked to its section when the page
    has one (the model card's)."""
    return f"⚠️ {OUTSIDE_KAGGLE[:-1]} ([external validation](#external-validation))." if linked else f"⚠️ {OUTSIDE_KAGGLE}"

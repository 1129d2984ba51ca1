"""A static gallery: ``index.html`` plus image files, one card per image (input, overlay, probabilities).

No server and no script: open the file, or publish the folder as a static Space.
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

from .captions import slice_caption, verdict
from ..config import CAM_METHODS, CLASS_NAMES, DISCLAIMER, DISPLAY_NAMES, true_class

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;background:#111;color:#eee}
a{color:#9cf} .summary span{margin-right:1.5rem} .note{color:#bbb;max-width:60rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1rem}
.card{background:#1d1d1d;border-radius:8px;padding:.8rem;border:2px solid #333}
.card.right{border-color:#2a6} .card.wrong{border-color:#c44} .card.flagged{border-color:#c80;border-style:dashed}
.card img{width:49%;border-radius:4px} .card h3{font-size:.95rem;margin:.4rem 0;word-break:break-all}
.scan{margin-top:1rem} .scan img.plot{width:100%;max-width:900px} .scan figure{display:inline-block;width:300px;margin:.3rem}
.scan figure img{width:49%} table{width:100%;font-size:.85rem} td.p{text-align:right} .warn{color:#fc6;font-size:.85rem}
"""


def write_gallery(clf, files, out: Path, method: str = "gradcam", progress: bool = True, plane: str = "axial") -> dict:
    """Explains every readable file and writes the site into ``out`` (replaced if it exists); a whole scan
    (:func:`~brain_mri.io.volumes.is_volume`) becomes one card with its plot and top slices.

    Returns:
        The summary: ``images``, ``labelled``, ``right``, ``wrong``, ``flagged``, ``scans`` and ``skipped``
        (``(file, reason)`` pairs, also listed on the page).
    """
    from tqdm.auto import tqdm

    from ..io.volumes import is_volume

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    cards, scans, skipped = [], [], []
    for k, path in enumerate(tqdm(files, desc="gallery", unit="file", disable=not progress)):
        path, stem = Path(path), f"{k:04d}"
        try:
            if is_volume(path):
                scans.append(_scan_card(clf, path, plane, method, tmp / "images", stem))
                continue
            e = clf.explain(path, method=method)
        except (OSError, ValueError) as err:
            skipped.append((str(path), str(err) or type(err).__name__))
            continue
        _save_pair(e, tmp / "images", stem)
        cards.append({"file": path.name, "stem": stem, "label": true_class(path), "explanation": e})
    summary = {**_summary(cards, skipped), "scans": len(scans)}
    (tmp / "index.html").write_text(_page(cards, scans, summary, clf.display_name(), method))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return summary


def _save_pair(e, folder: Path, stem: str) -> None:
    from PIL import Image

    for kind, array in (("input", e.image), ("overlay", e.overlay)):
        image = Image.fromarray(array)
        image.thumbnail((512, 512))  # pages stay light; the app shows full size
        image.save(folder / f"{stem}_{kind}.png")


def _scan_card(clf, path: Path, plane: str, method: str, folder: Path, stem: str) -> str:
    """A scan's card: its summary, the probability plot and its top slices with their overlays."""
    from PIL import Image

    from .report import probability_plot

    a = clf.assess_volume(path, plane, top=3, method=method)
    Image.fromarray(probability_plot(a)).save(folder / f"{stem}_plot.png")
    slices = []
    for index, e in a.top:
        _save_pair(e, folder, f"{stem}_{index}")
        slices.append(f'<figure><img src="images/{stem}_{index}_input.png" alt="slice {index}">'
                      f'<img src="images/{stem}_{index}_overlay.png" alt="heatmap of slice {index}">'
                      f"<figcaption>{slice_caption(index, e)}</figcaption></figure>")
    name = html.escape(a.name)
    return (f'<div class="card scan"><h3>{name} · {html.escape(a.kind)} · {len(a.slices)} {plane} slices</h3>'
            f'<img class=plot src="images/{stem}_plot.png" alt="class probabilities along {name}">'
            f"<p>{html.escape(a.summary())}</p>{''.join(slices)}</div>")


def _summary(cards, skipped) -> dict:
    # a flagged image gets no answer: it is neither right nor wrong
    labelled = [(c["label"], c["explanation"].predicted) for c in cards if c["label"] and not c["explanation"].warning]
    return {"images": len(cards), "labelled": len(labelled), "right": sum(a == b for a, b in labelled),
            "wrong": sum(a != b for a, b in labelled), "flagged": sum(bool(c["explanation"].warning) for c in cards),
            "skipped": skipped}


def _card(card) -> str:
    e, label = card["explanation"], card["label"]
    predicted = e.predicted
    state = "flagged" if e.warning else "unlabelled" if label is None else "right" if label == predicted else "wrong"
    rows = "".join(f"<tr><td>{DISPLAY_NAMES[c]}</td><td class=p>{e.probabilities[c]:.1%}</td></tr>" for c in CLASS_NAMES)
    truth = "" if label is None else f" · true: <b>{DISPLAY_NAMES[label]}</b>{verdict(label, predicted, e.warning)}"
    answer = "no answer" if e.warning else f"predicted: <b>{DISPLAY_NAMES[predicted]}</b>"
    warn = f'<p class="warn">⚠ {html.escape(e.warning)}</p>' if e.warning else ""
    name = html.escape(card["file"])
    return (f'<div class="card {state}"><h3>{name}</h3>'
            f'<img src="images/{card["stem"]}_input.png" alt="{name}">'
            f'<img src="images/{card["stem"]}_overlay.png" alt="heatmap of {name}">'
            f"<p>{answer}{truth}</p>{warn}<table>{rows}</table></div>")


def _page(cards, scans, summary, model: str, method: str) -> str:
    counts = f"<span>{summary['images']} images</span>" + (f"<span>{len(scans)} whole scans</span>" if scans else "")
    if summary["labelled"]:
        counts += (f"<span class=right-count>{summary['right']} right</span>"
                   f"<span class=wrong-count>{summary['wrong']} wrong</span>"
                   f"<span>accuracy {summary['right'] / summary['labelled']:.1%} of {summary['labelled']} labelled and answered</span>")
    counts += f"<span>{summary['flagged']} not taken for a brain MRI (no answer)</span>"
    skipped = "".join(f"<li>{html.escape(Path(f).name)}: {html.escape(r)}</li>" for f, r in summary["skipped"])
    skipped = f"<h2>Unreadable files, skipped</h2><ul>{skipped}</ul>" if skipped else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>brain-mri gallery</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{STYLE}</style></head><body>"
            f"<h1>Brain MRI tumour classifier: gallery</h1><p class=summary>{counts}</p>"
            f"<p class=note>Model: {html.escape(model)} · heatmap: {CAM_METHODS[method][1]} of the predicted class. "
            f"{html.escape(DISCLAIMER)}</p><div class=cards>{''.join(_card(c) for c in cards)}</div>"
            f"{''.join(scans)}{skipped}"
            f"</body></html>\n")

#!/usr/bin/env python
"""External validation: a model on brain MRI from outside the Kaggle set, through the public API
(``assess`` for slices, ``assess_volume`` for scans, the app's "not a brain MRI" gate on); prints one table.

    python benchmarks/external.py --model model [--data ../shared/data/external] [--json out.json] [--write-card]

The data folder is laid out as ``../shared/data/external`` (its README gives each file's truth and licence):
- a folder of 2-D images (JPEG/PNG), every one with a tumour: share answered, share called a tumour, classes;
- folders of NIfTI volumes with a tumour; a ``*mask*`` NIfTI beside them marks the tumour's axial slices. Per
  volume: the slices inside the tumour range (answered, called a tumour, classes) and outside it (called a
  tumour), flagged slices, and whether the top slice (highest tumour probability) lies in the range;
- ``healthy/``: volumes with no tumour: answered, called "no tumour". Its skull-on T1 (``chris_t1``) is also
  rewritten as a DICOM series of sagittal files, each with the automatic window of its own slice, as scanners
  write them, and read back as a user's zip would be.
``detect-tumor`` 0.1.1 is run on the 2-D images when it is installed. Measure and choose with these files;
never train on them.
"""
import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "external"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: A healthy scan's slices "inside the head": head section at least this share of the largest (``Volume.sections``).
IN_HEAD = 0.1
SHORT = {"glioma": "G", "meningioma": "M", "pituitary": "P", "notumor": "N"}


def tumour_slices(mask) -> list[int]:
    """Axial slices (RAS+, as :mod:`brain_mri.io.volumes` counts them) holding a tumour voxel of ``mask``."""
    import nibabel as nib
    import numpy as np

    data = np.asarray(nib.as_closest_canonical(nib.load(str(mask))).dataobj)
    return [int(k) for k in np.nonzero(data.reshape(-1, data.shape[2]).any(axis=0))[0]]


def find_sets(data: Path, limit: int | None = None, only: list | None = None) -> dict:
    """``{"images": [(folder, files, truth)], "volumes": [(path, truth, tumour slices or None)]}`` under ``data``
    (``healthy/`` holds no tumour, every other folder a tumour); ``limit`` caps the images per folder, ``only``
    keeps the volumes whose file name contains one of its strings."""
    import nibabel as nib

    sets = {"images": [], "volumes": []}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        truth = "no tumour" if folder.name == "healthy" else "tumour"
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            sets["images"].append((folder, images[:limit], truth))
        masks = sorted(folder.glob("*mask*.nii*"))
        for scan in sorted(folder.glob("*.nii*")):
            if scan in masks or (only and not any(o in scan.name for o in only)):
                continue
            # a mask marks the tumour of the volumes it was drawn on: same grid, same place
            fits = masks and nib.load(str(scan)).shape[:3] == nib.load(str(masks[0])).shape[:3]
            sets["volumes"].append((scan, truth, tumour_slices(masks[0]) if fits and truth == "tumour" else None))
    sets["volumes"].sort(key=lambda v: v[1] == "no tumour")  # tumours first, healthy scans last
    return sets


def calls(rows: list) -> dict:
    """Counts over per-image or per-slice ``rows`` (``predicted``: a class, or None when flagged)."""
    answered = [r["predicted"] for r in rows if r["predicted"] is not None]
    tumour = [c for c in answered if c != "notumor"]
    return {"n": len(rows), "flagged": len(rows) - len(answered), "answered": len(answered),
            "tumour": len(tumour), "classes": dict(Counter(answered)),
            "top_class": Counter(tumour).most_common(1)[0][0] if tumour else None}


def image_rows(clf, files: list) -> list:
    out = []
    for f in files:
        row = clf.assess([f])[0]
        probs = row["probabilities"]
        out.append({"file": f.name, "predicted": None if row["warning"] else max(probs, key=probs.get)})
    return out


def peer_rows(files: list) -> list | None:
    """``detect-tumor``'s calls on ``files``, or None when it is not installed or cannot run."""
    try:
        from detect_tumor import TumorDetector

        peer = TumorDetector()
    except Exception:  # noqa: BLE001 - a missing or broken third-party peer only skips its row
        return None
    return [{"file": f.name, "predicted": peer.predict(str(f)).predicted_class} for f in files]


def volume_rows(clf, volume) -> tuple[list, int | None]:
    """Per axial slice ``predicted`` (None when flagged) and ``section`` (its head section, a share of the largest),
    and the top slice (None when no slice is answered)."""
    from brain_mri.serving.scans import top_slices

    a = clf.assess_volume(volume, top=0)
    top = top_slices(a.slices, 1)
    return [{"slice": i, "predicted": a.predicted(i), "section": float(a.sections[i])}
            for i in range(len(a.slices))], (top[0] if top else None)


def volume_records(clf, scan: Path, truth: str, inside, name: str | None = None) -> list:
    """Table rows for one volume: its tumour range and the rest, or all its slices."""
    from brain_mri.io.volumes import read_volume

    volume = read_volume(scan)
    rows, top = volume_rows(clf, volume)
    name = name or scan.name.split(".nii")[0]
    base = {"set": name, "truth": truth, "reading": volume.reading}
    if not inside:  # a healthy scan: the slices that cut the head well are the ones to answer
        head = [r for r in rows if r["section"] >= IN_HEAD]
        return [{**base, "slices": "all", **calls(rows), "top_slice": top},
                {**base, "slices": f"inside the head ({len(head)})", **calls(head)}]
    first, last = inside[0], inside[-1]
    in_range = [r for r in rows if first <= r["slice"] <= last]
    outside = [r for r in rows if not first <= r["slice"] <= last]
    return [{**base, "slices": f"{first}–{last} (tumour)", **calls(in_range), "top_slice": top,
             "top_in_range": top is not None and first <= top <= last},
            {**base, "truth": "outside the tumour", "slices": "the rest", **calls(outside)}]


def as_dicom_series(nifti: Path, folder: Path) -> Path:
    """A zip of ``nifti`` rewritten as sagittal DICOM files, each with the automatic window of its own slice."""
    from volume_files import write_sagittal_series, zip_files

    return zip_files(folder / "series.zip", write_sagittal_series(nifti, folder / "series"))


def series_record(clf, nifti: Path) -> list:
    """``nifti`` (a healthy scan) as a DICOM series with per-file windows (:func:`as_dicom_series`), scored."""
    with tempfile.TemporaryDirectory() as tmp:
        records = volume_records(clf, as_dicom_series(nifti, Path(tmp)), "no tumour", None)
    return [{**r, "set": f"{nifti.name.split('.nii')[0]} as a DICOM series (a window per file)"} for r in records]


def measure(clf, data: Path, limit: int | None = None, only: str | None = None) -> list:
    """Every table row for the data under ``data``."""
    sets, records = find_sets(data, limit, only), []
    for folder, files, truth in sets["images"]:
        records.append({"set": f"{folder.name} (2-D)", "truth": truth, "slices": "all",
                        **calls(image_rows(clf, files))})
        peer = peer_rows(files)
        if peer is not None:
            records.append({"set": f"{folder.name}, detect-tumor 0.1.1", "truth": truth, "slices": "all",
                            **calls(peer)})
    for scan, truth, inside in sets["volumes"]:
        records += volume_records(clf, scan, truth, inside)
        if scan.name.startswith("chris_t1"):
            records += series_record(clf, scan)
    return records


def _share(k: int, n: int) -> str:
    return f"{k} / {n} ({k / n:.0%})" if n else "–"


def table(records: list) -> str:
    """The records as one Markdown table."""
    lines = ["| set | truth | slices | flagged | answered | called a tumour | classes of the answered | top slice |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for r in records:
        classes = " · ".join(f"{SHORT[c]} {r['classes'][c]}" for c in SHORT if r["classes"].get(c))
        top = "–" if "top_slice" not in r else (
            "none answered" if r["top_slice"] is None else f"{r['top_slice']}"
            + ({True: " (in range)", False: " (outside)"}.get(r.get("top_in_range"), "")))
        lines.append(f"| {r['set']} | {r['truth']} | {r['slices']} | {r['flagged']} | {_share(r['answered'], r['n'])} | "
                     f"{_share(r['tumour'], r['answered'])} | {classes or '–'} | {top} |")
    return "\n".join(lines)


def external_score(records: list) -> dict:
    """``{"score": S, "parts": {...}}``: S (0-100) is the mean of three parts, each counting a flagged slice as a
    miss: (a) 2-D tumour slices from another collection called a tumour; (b) the tumour-range slices of the masked
    volumes called a tumour, pooled over their contrasts; (c) the in-head slices of each healthy volume called
    "no tumour", averaged over the volumes (a volume rewritten as a DICOM series is not counted twice). S is None
    when a part has no rows (``--limit`` / ``--only`` runs)."""
    def pooled(rows, hit):
        n = sum(r["n"] for r in rows)
        return {"hits": sum(hit(r) for r in rows), "of": n, "share": sum(hit(r) for r in rows) / n} if n else None

    images = [r for r in records if r["set"].endswith("(2-D)") and r["truth"] == "tumour"]
    ranges = [r for r in records if r["truth"] == "tumour" and r["slices"].endswith("(tumour)")]
    healthy = [r for r in records if r["truth"] == "no tumour" and r["slices"].startswith("inside the head")
               and "DICOM series" not in r["set"]]
    parts = {"other_collection_called_tumour": pooled(images, lambda r: r["tumour"]),
             "tumour_range_called_tumour": pooled(ranges, lambda r: r["tumour"]),
             "healthy_in_head_no_tumour": {
                 "volumes": {r["set"]: round((r["answered"] - r["tumour"]) / r["n"], 4) for r in healthy},
                 "share": sum((r["answered"] - r["tumour"]) / r["n"] for r in healthy) / len(healthy)}
             if healthy else None}
    done = all(parts.values())
    return {"score": round(100 * sum(p["share"] for p in parts.values()) / 3, 1) if done else None, "parts": parts}


def score_line(score: dict) -> str:
    """The score and its parts in one line."""
    if score["score"] is None:
        return "External score: not computed (a part has no rows; run on the whole data set)."
    a, b, c = (p["share"] for p in score["parts"].values())
    return (f"External score: {score['score']:.1f} = mean of other collection called a tumour {a:.1%}, tumour range "
            f"called a tumour {b:.1%}, healthy in-head slices called \"no tumour\" {c:.1%} (flagged = miss)")


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "model"), help="model folder or Hub id")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="external data folder (default: %(default)s)")
    p.add_argument("--limit", type=int, help="at most this many 2-D images per folder (a quick check)")
    p.add_argument("--only", nargs="+", help="only the volumes whose file name contains one of these")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--write-card", action="store_true", help="save the rows as external.json in the model folder "
                   "and render its card again with them")
    args = p.parse_args(argv)
    from brain_mri import BrainMRIClassifier, configure_threads

    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"No external data at {data}: pass --data.")
    if args.write_card and (args.limit or args.only or not Path(args.model).is_dir()):
        sys.exit("--write-card needs a model folder and the whole data set (no --limit, no --only).")
    configure_threads()
    clf, start = BrainMRIClassifier.from_pretrained(args.model), time.perf_counter()
    records = measure(clf, data, args.limit, args.only)
    print(f"{clf.display_name()} on {data.name}/ "
          f"({time.perf_counter() - start:.0f} s)\n\n{table(records)}")
    score = external_score(records)
    print(f"\n{score_line(score)}")
    given = argv if argv is not None else sys.argv[1:]  # paths by their last part: no server's folders in a card
    result = {"command": " ".join(["python benchmarks/external.py", *(Path(a).name if "/" in a else a for a in given)]),
              "date": time.strftime("%Y-%m-%d"), "table": table(records), **score, "rows": records}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.write_card:
        from brain_mri.card import save_external

        save_external(Path(args.model), result)
    return records


if __name__ == "__main__":
    main()

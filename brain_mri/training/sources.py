"""Other sources of training slices (``train.py --extra-sources DIR``): a ``manifest.csv`` of volumes and 2-D
slices, cut into labelled slices by the product's own volume reader and cached once as PNG files.

Slices are cut with :func:`~brain_mri.io.volumes.read_volume` and :meth:`~brain_mri.io.volumes.Volume.slice` in all
three planes, so that they look exactly like the slices the app scores. Healthy volumes give "no tumour" on every
slice inside the head, the ends of the head included (where Kaggle-trained models raise false alarms); a volume
with a tumour label gives "glioma" where the label covers a share of the brain (its box feeds ``--box-loss``) and
"no tumour" a margin of slices away from it; slices in between are ambiguous and skipped. Training code.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import CLASS_NAMES
from ..io.volumes import PLANES, Volume, _axis, read_volume

logger = logging.getLogger(__name__)
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "kind", "truth", "subject", "contrast", "source")
INDEX_COLUMNS = ("file", "label", "source", "subject", "contrast", "plane", "index", "x0", "y0", "x1", "y1")
CACHE_VERSION = 1  # bump when the cutting changes: old caches are then cut anew


class SourceError(ValueError):
    """A manifest or one of its files cannot be used; the message says which and why."""


@dataclass(frozen=True)
class SliceRules:
    """How volumes become labelled slices; every rule is a ``train.py`` flag of the same name (``--extra-*``)."""

    stride: int = 3  # every n-th slice of a plane
    min_head: float = 0.05  # head section (share of the scan's largest) a slice must reach to count as in the head
    tumour_share: float = 0.01  # share of the brain the label must cover for "glioma"
    margin: int = 5  # slices between the label's last slice and a "no tumour" one
    planes: tuple = PLANES


def read_manifest(folder) -> list[dict]:
    """The rows of ``folder/manifest.csv`` with absolute paths.

    Raises:
        SourceError: no manifest, a missing column, an unknown kind or truth, or a missing file.
    """
    root = Path(folder).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        raise SourceError(f"--extra-sources {folder}: no {MANIFEST} in it (columns: {', '.join(MANIFEST_COLUMNS)}).")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in MANIFEST_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise SourceError(f"{path.name} in {folder}: {'no rows' if not rows else 'missing ' + ', '.join(missing)}.")
    for n, row in enumerate(rows, 2):
        where = f"{path.name} line {n}"
        if row["kind"] not in ("volume", "slice") or row["truth"] not in CLASS_NAMES:
            raise SourceError(f"{where}: kind must be volume or slice and truth one of {', '.join(CLASS_NAMES)}.")
        if row["truth"] != "notumor" and row["kind"] == "volume" and not row.get("label"):
            raise SourceError(f"{where}: a volume with a tumour needs its label map in the 'label' column.")
        for key in ("path", "label"):
            if row.get(key):
                row[key] = str(root / row[key])
                if not Path(row[key]).is_file():
                    raise SourceError(f"{where}: no such file {Path(row[key]).name}.")
        row["subject"] = row["subject"] or ""  # none: the slice's near-copies make its group (mixing.load_extra)
    return rows


def source_facts(folders, exclude: tuple = ()) -> dict:
    """``{source: {"licence", "skull", "contrasts"}}`` of the manifests, for the model card."""
    facts = {}
    for folder in folders:
        for r in read_manifest(folder):
            if r["source"] not in exclude:
                f = facts.setdefault(r["source"], {"licence": r.get("licence", ""), "skull": set(), "contrasts": set()})
                f["skull"].add(r.get("skull", "")), f["contrasts"].add(r["contrast"])
    return {s: {**f, "skull": "/".join(sorted(f["skull"])), "contrasts": "/".join(sorted(f["contrasts"]))}
            for s, f in facts.items()}


def healthy_slices(volume: Volume, rules: SliceRules):
    """``(plane, index, label, box)`` of every ``stride``-th slice inside the head: "no tumour", no box."""
    for plane in rules.planes:
        inside = np.nonzero(volume.sections(plane) >= rules.min_head)[0]
        for i in inside[::rules.stride]:
            yield plane, int(i), "notumor", None


def labelled_slices(volume: Volume, label: np.ndarray, truth: str, rules: SliceRules):
    """``(plane, index, label, box)`` of a volume with a tumour label map on its grid: ``truth`` with the label's
    box (in the slice's pixels) where the label covers ``tumour_share`` of the head, "no tumour" more than
    ``margin`` slices from any label, the rest skipped."""
    mask = Volume((label > 0).astype(np.float32), volume.spacing, (0.0, 1.0), volume.name, volume.kind)
    for plane in rules.planes:
        axis = _axis(plane)
        other = tuple(k for k in range(3) if k != axis)
        tumour = (label > 0).sum(other)
        head = (volume.data > volume.data.min()).sum(other)  # skull-stripped: the background is the minimum
        share = tumour / np.maximum(head, 1)
        labelled = np.nonzero(tumour)[0]
        sections = volume.sections(plane)
        for i in range(0, volume.count(plane), rules.stride):
            if sections[i] < rules.min_head:
                continue
            if share[i] >= rules.tumour_share:
                ys, xs = np.nonzero(mask.slice(i, plane) >= 128)
                if len(xs):
                    yield plane, i, truth, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            elif not len(labelled) or np.abs(labelled - i).min() > rules.margin:
                yield plane, i, "notumor", None


def volume_slices(row: dict, rules: SliceRules):
    """``(image, plane, index, label, box)`` of one manifest volume (8-bit grey images, as the app sees them).

    Raises:
        SourceError: the volume (or its label map) cannot be read, or the label map is on another grid.
    """
    try:
        volume = read_volume(row["path"])
    except ValueError as e:
        raise SourceError(f"{Path(row['path']).name}: {e}") from e
    if row["truth"] == "notumor":
        found = healthy_slices(volume, rules)
    else:
        import nibabel as nib

        label = np.asarray(nib.as_closest_canonical(nib.load(row["label"])).dataobj)
        if label.shape[:3] != volume.data.shape:
            raise SourceError(f"{Path(row['label']).name}: label grid {label.shape} is not the volume's "
                              f"{volume.data.shape}.")
        found = labelled_slices(volume, label, row["truth"], rules)
    for plane, i, truth, box in found:
        yield volume.slice(i, plane), plane, i, truth, box


def cache_root() -> Path:
    """Where cut slices are kept: ``$BRAIN_MRI_CACHE`` or ``~/.cache/brain_mri``."""
    return Path(os.environ.get("BRAIN_MRI_CACHE") or Path.home() / ".cache" / "brain_mri")


def cache_key(folder, rules: SliceRules) -> str:
    """Changes with the manifest, the rules and the cutting's version: a stale cache is never read."""
    manifest = (Path(folder).expanduser() / MANIFEST).read_bytes()
    return hashlib.sha1(manifest + json.dumps([asdict(rules), CACHE_VERSION]).encode()).hexdigest()[:16]


def cut_sources(folder, rules: SliceRules, exclude: tuple = ()) -> list[dict]:
    """Every slice of ``folder``'s manifest as an index row (``INDEX_COLUMNS``; ``file`` a path), cutting the
    volumes once into the cache (volumes of a source in ``exclude`` are left out; so are its slices)."""
    every = read_manifest(folder)
    rows = [r for r in every if r["source"] not in exclude]
    out = cache_root() / "sources" / cache_key(folder, rules)
    index = out / "index.csv"
    if not index.is_file():  # the whole manifest: one cache serves every --extra-exclude
        _cut_volumes(every, rules, out)
    with index.open(newline="") as f:
        cut = [dict(r, file=str(out / r["file"])) for r in csv.DictReader(f) if r["source"] not in exclude]
    flat = [{"file": r["path"], "label": r["truth"], "source": r["source"], "subject": r["subject"],
             "contrast": r["contrast"], "plane": "", "index": "", "x0": "", "y0": "", "x1": "", "y1": ""}
            for r in rows if r["kind"] == "slice"]
    return cut + flat


def _cut_volumes(rows: list, rules: SliceRules, out: Path) -> None:
    """Cuts every volume of ``rows`` into PNG slices under ``out`` with ``index.csv``, written last (atomically):
    a cut broken off is cut again next time."""
    import time

    from PIL import Image

    t0, records = time.time(), []
    (out / "slices").mkdir(parents=True, exist_ok=True)
    for row in (r for r in rows if r["kind"] == "volume"):
        stem = f"{row['subject']}_{row['contrast']}".replace("/", "_")
        for image, plane, i, truth, box in volume_slices(row, rules):
            name = f"slices/{stem}_{plane}_{i:03d}.png"
            Image.fromarray(image).save(out / name, optimize=False, compress_level=1)
            records.append({"file": name, "label": truth, "source": row["source"], "subject": row["subject"],
                            "contrast": row["contrast"], "plane": plane, "index": i,
                            **dict(zip(("x0", "y0", "x1", "y1"), box or ("",) * 4))})
    tmp = out / "index.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(out / "index.csv")
    size = sum(p.stat().st_size for p in (out / "slices").iterdir())
    logger.info("cut %d slices of %d volumes in %.0f s into %s (%.0f MB)", len(records),
                sum(r["kind"] == "volume" for r in rows), time.time() - t0, out, size / 1e6)

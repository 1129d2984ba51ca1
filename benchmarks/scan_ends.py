#!/usr/bin/env python
"""The ends of the head in whole scans: where the top slices fall, and what the model calls the slices near the
vertex and the skull base, binned by each axial slice's head section as a share of the scan's largest.

    python benchmarks/scan_ends.py [--model model] [--data ../shared/data/external]

A slice's head section is :meth:`brain_mri.io.volumes.Volume.sections` (the area above 20/255 of the scan's window,
holes filled), the measure behind the whole-scan summary's "near an end of the head". Tumour ranges come from a ``*mask*`` NIfTI beside a volume, as in
``benchmarks/external.py``; the table says how small a tumour slice's section gets, so a rule that leaves out
small sections can be checked against the tumours it would hide.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from external import DEFAULT_DATA, ROOT, SHORT, as_dicom_series, find_sets  # noqa: E402

BINS = (0.0, 0.2, 0.35, 0.5, 0.75, 1.01)


def rows_for(clf, name: str, volume, inside) -> list:
    from brain_mri.serving.scans import top_slices

    a = clf.assess_volume(volume, top=0)
    share, top = volume.sections(), top_slices(a.slices, 4)
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        k = [i for i in range(len(share)) if lo <= share[i] < hi]
        called = [a.predicted(i) for i in k if a.predicted(i) not in (None, "notumor")]
        rows.append(f"| {name} | {lo:.2f}–{min(hi, 1):.2f} | {len(k)} | {sum(a.predicted(i) is not None for i in k)} | "
                    f"{' · '.join(f'{SHORT[c]} {called.count(c)}' for c in SHORT if called.count(c)) or '–'} | "
                    f"{', '.join(str(i) for i in top if i in k) or '–'} | "
                    f"{sum(inside[0] <= i <= inside[-1] for i in k) if inside else '–'} |")
    if inside:
        rows.append(f"| {name} | tumour range {inside[0]}–{inside[-1]}: smallest section "
                    f"{share[inside[0]:inside[-1] + 1].min():.2f} | | | | | |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    args = p.parse_args(argv)
    from brain_mri import BrainMRIClassifier, configure_threads
    from brain_mri.io.volumes import read_volume

    configure_threads()
    clf = BrainMRIClassifier.from_pretrained(args.model)
    print("| scan | head section (share of the largest) | slices | answered | called a tumour | top-4 slices here "
          "| tumour-range slices |\n|---|---|---:|---:|---|---|---:|")
    for scan, _, inside in find_sets(Path(args.data))["volumes"]:
        print("\n".join(rows_for(clf, scan.name.split(".nii")[0], read_volume(scan), inside)), flush=True)
        if scan.name.startswith("chris_t1"):
            with tempfile.TemporaryDirectory() as tmp:
                series = read_volume(as_dicom_series(scan, Path(tmp)))
                print("\n".join(rows_for(clf, "chris_t1 as a DICOM series", series, None)), flush=True)


if __name__ == "__main__":
    main()

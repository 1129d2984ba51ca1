#!/usr/bin/env python
"""Training runs side by side: keep each finished run's small JSON results in ``benchmarks/results/NAME/`` (the run
folders may be gone next session) and print one Markdown row per run with every validation.

    python benchmarks/runs.py save RUN_DIR [RUN_DIR ...]    # metrics.json, training_args.json, external.json
    python benchmarks/runs.py table [NAME ...]              # all saved runs, or these

A run's external JSON is ``external.json`` (``--write-card``) or ``external_run.json``
(``benchmarks/external.py --json RUN_DIR/external_run.json``).
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
KEPT = {"metrics.json": "metrics.json", "training_args.json": "training_args.json",
        "external.json": "external.json", "external_run.json": "external.json"}
HEADER = ("| run | epochs (best) | val acc / macro-F1 | leak-free test acc / glioma recall / ECE | Testing pointing / "
          "box energy | other sources, held-out subjects: right / tumour called / \"no tumour\" kept | Br35H held out "
          "called a tumour | external score (a / b / c) | other collection flagged | TCGA tumour range called: "
          "FLAIR / T1 / T1c / T2 | TCGA outside the range called | healthy in-head \"no tumour\": chris_t1 / IXI T1 / "
          "IXI T2 | gate: Testing leak-free flagged |")


def save(run: Path) -> Path:
    """Copies ``run``'s small result files into ``benchmarks/results/<run name>/``; returns that folder."""
    out = RESULTS / run.name
    out.mkdir(parents=True, exist_ok=True)
    for name, target in KEPT.items():
        if (run / name).is_file():
            shutil.copyfile(run / name, out / target)
    return out


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _external_cells(external: dict | None) -> list:
    from external import external_score  # scored anew from the rows: one rule for every run

    score = external_score(external["rows"]) if external else {"score": None}
    if score["score"] is None:
        return ["–"] * 5
    rows, parts = external["rows"], score["parts"]
    a, b, c = (parts[k]["share"] for k in parts)
    score = f"**{score['score']:.1f}** ({_pct(a)} / {_pct(b)} / {_pct(c)})"
    flagged = next((f"{r['flagged']} of {r['n']}" for r in rows if r["set"].endswith("(2-D)")), "–")
    tcga = [r for r in rows if r["set"].startswith("TCGA") and r["slices"].endswith("(tumour)")]
    inside = " / ".join(_pct(r["tumour"] / r["n"]) for r in tcga)
    outside = [r for r in rows if r["set"].startswith("TCGA") and r["truth"] == "outside the tumour"]
    out = f"{_pct(min(r['tumour'] / r['n'] for r in outside))}–{_pct(max(r['tumour'] / r['n'] for r in outside))}" \
        if outside else "–"
    volumes = parts["healthy_in_head_no_tumour"]["volumes"]
    healthy = " / ".join(_pct(volumes[k]) for k in sorted(volumes, key=str.lower))  # chris_t1, IXI002 T1, T2
    return [score, flagged, inside, out, healthy]


def row(folder: Path) -> str:
    """One table row from a saved (or live) run folder."""
    m = json.loads((folder / "metrics.json").read_text())
    external = next((json.loads((folder / n).read_text()) for n in ("external.json", "external_run.json")
                     if (folder / n).is_file()), None)
    lf = m["test"]["leak_free"]["calibrated"]
    loc = m.get("localisation", {}).get("test", {}).get("all boxed", {})
    held = m.get("other_sources", {}).get("held_out_metrics", {}).get("all", {})
    tumour = m.get("tumour_present", {}).get("held_out_called_tumour")
    cells = [folder.name, f"{m['training']['epochs_run']} ({m['training']['best_epoch']})",
             f"{m['validation']['accuracy']:.4f} / {m['validation']['macro_f1']:.4f}",
             f"{_pct(lf['accuracy'])} / {_pct(lf['per_class']['glioma']['recall'])} / {_pct(lf['ece'])}",
             f"{loc.get('pointing', 0):.3f} / {loc.get('box_ratio', 0):.2f}" if loc else "–",
             " / ".join(_pct(held.get(k)) for k in ("accuracy", "tumour_called", "notumor_kept")) if held else "–",
             _pct(tumour), *_external_cells(external), _pct(m.get("ood", {}).get("test_leak_free_flagged"))]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("save", help="keep runs' result files").add_argument("runs", nargs="+", type=Path)
    sub.add_parser("table", help="print the runs table").add_argument("names", nargs="*")
    args = p.parse_args(argv)
    if args.command == "save":
        for run in args.runs:
            if not (run / "metrics.json").is_file():
                sys.exit(f"{run.name}: no metrics.json (not a finished run)")
            print(save(run))
        return
    folders = [RESULTS / n for n in args.names] or sorted(f for f in RESULTS.iterdir() if (f / "metrics.json").is_file())
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for folder in folders:
        print(row(folder))


if __name__ == "__main__":
    main()

"""Whole-scan speed and memory: a 155-slice 240 x 240 NIfTI volume (BraTS's shape) built from the example
slices, scored by the API and answered by the app, at the app's thread setting; prints a table.

    python benchmarks/volume.py [--model model] [--repeats 3]

Run it on an idle machine: a neighbour on one of two cores changes the figures several times over.
"""
import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

AXIAL = ["notumor_axial_1.jpg", "notumor_axial_2.jpg", "glioma_axial.jpg", "notumor_axial_3.jpg",
         "pituitary_axial.jpg", "meningioma_axial.jpg"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_scan(folder: Path, slices: int = 155, size: int = 240) -> Path:
    import numpy as np
    from volume_files import example_slices, write_nifti

    pictures = example_slices(AXIAL, size)
    return write_nifti(folder / "scan.nii.gz", np.stack([pictures[i % len(pictures)] for i in range(slices)]))


def first_and_last_answer(client, scan: Path) -> tuple[float, float]:
    """Seconds from the request to the page's first answer (the scores and plot) and to its last (the heatmaps)."""
    from gradio_client import handle_file

    start = time.perf_counter()
    job = client.submit(dicom=handle_file(str(scan)), api_name="/predict")
    first = None
    while not job.done():
        if first is None and job.outputs():
            first = time.perf_counter() - start
        time.sleep(0.02)
    job.result()
    last = time.perf_counter() - start
    return (first or last), last


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from gradio_client import Client, handle_file

    import app
    from brain_mri import BrainMRIClassifier, configure_threads
    from brain_mri.io.volumes import read_volume

    threads = configure_threads()
    clf = BrainMRIClassifier.from_pretrained(args.model)
    scan = build_scan(Path(tempfile.mkdtemp()))
    demo = app.build_demo(clf)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    client = Client(demo.local_url, verbose=False)
    client.predict(handle_file(str(ROOT / "examples" / "glioma_axial.jpg")), api_name="/predict")  # a warm app
    before = peak_rss_mb()
    rows = {"read the scan (s)": [], "score all 155 slices (s)": [], "page: first answer (s)": [],
            "page: with the heatmaps (s)": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        volume = read_volume(scan)
        rows["read the scan (s)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        clf.assess_volume(volume, top=0)
        rows["score all 155 slices (s)"].append(time.perf_counter() - t)
        first, last = first_and_last_answer(client, scan)
        rows["page: first answer (s)"].append(first)
        rows["page: with the heatmaps (s)"].append(last)
    growth = peak_rss_mb() - before
    demo.close()
    print(f"\n155 x 240 x 240 NIfTI, torch threads {threads} (the app's setting), {args.repeats} runs\n")
    print("| measure | best | median |\n|---|---:|---:|")
    for name, values in rows.items():
        values = sorted(values)
        print(f"| {name} | {values[0]:.2f} | {values[len(values) // 2]:.2f} |")
    print(f"| peak RSS growth over a warm app (MB) | {growth:.0f} | |")


if __name__ == "__main__":
    main()

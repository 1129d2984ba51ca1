#!/usr/bin/env python
"""The app under load: many users at once, a long series, a flood beyond its queue.

    python benchmarks/load.py [--model model] [--users 16] [--requests 20] [--series 500] [--flood 200]

Starts `app.py` on loopback (offline, its temporary folders in a fresh TMPDIR / GRADIO_TEMP_DIR so
they can be counted) and drives it with gradio_client, one Client per user, with the example slices
(answers as JSON; output files are left on the server, not downloaded):
- reference: each image once, one request at a time; every later answer must equal it (same
  probabilities, same explained class): no mixed results between users;
- load: ``--users`` concurrent users x ``--requests`` each: failures, mismatches, p50 / p95;
- series: ``--series`` requests in a row: server RSS growth and files left in the temporary folders
  (then again after Gradio's cache deletion has run, ``--cache-delete``);
- flood: ``--flood`` requests submitted at once: how many get "busy, try again" (queue full), how
  many are answered, and whether all end within ``--flood-timeout`` seconds.
Also the model's own predict + CAM time in this process, for the per-request overhead.
"""
import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app_startup import start_app

ROOT = Path(__file__).resolve().parent.parent


def request(client, image: Path):
    """One /predict call: (seconds, details)."""
    from gradio_client import handle_file

    t = time.perf_counter()
    dicom = image.suffix == ".dcm"
    out = client.predict(None if dicom else handle_file(str(image)), handle_file(str(image)) if dicom else None,
                         api_name="/predict")
    return time.perf_counter() - t, out[2]


def same(details: dict, reference: dict) -> bool:
    return details["explained_class"] == reference["explained_class"] and all(
        abs(details["probabilities"][c] - p) < 1e-6 for c, p in reference["probabilities"].items())


def load(url: str, images: list, references: dict, users: int, per_user: int) -> dict:
    """``users`` threads, each with its own Client, ``per_user`` requests over the images."""
    from gradio_client import Client

    times, failures, mismatches, lock = [], [], [], threading.Lock()

    def user(u: int):
        client = Client(url, verbose=False, download_files=False)
        for k in range(per_user):
            image = images[(u + k) % len(images)]
            try:
                seconds, details = request(client, image)
            except Exception as e:  # counted, not raised: the point is how many
                with lock:
                    failures.append(f"{image.name}: {e}")
                continue
            with lock:
                times.append(seconds)
                if not same(details, references[image.name]):
                    mismatches.append(image.name)

    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    q = statistics.quantiles(times, n=20) if len(times) > 1 else times * 19
    return {"requests": users * per_user, "failures": len(failures), "mismatches": len(mismatches),
            "p50_s": statistics.median(times), "p95_s": q[18], "first_failures": failures[:3]}


def server_phases(url: str) -> dict:
    """Gradio's profile of the requests so far (GRADIO_PROFILING=1): median ms per phase, then cleared."""
    import urllib.request

    with urllib.request.urlopen(f"{url}gradio_api/profiling/summary") as r:
        summary = json.loads(r.read())
    urllib.request.urlopen(urllib.request.Request(f"{url}gradio_api/profiling/clear", method="POST")).close()
    phases = {name: p["p50"] for name, p in summary["phases"].items()}
    return {**phases, "upload": summary.get("upload", {}).get("p50", 0.0)}


def rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def series(url: str, pid: int, images: list, n: int, tmp: Path) -> dict:
    """``n`` requests in a row from one user (the server is warm): RSS and temporary files before and after."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    before_rss, before_files = rss_mb(pid), count_files(tmp)
    times = [request(client, images[k % len(images)])[0] for k in range(n)]
    return {"requests": n, "p50_s": statistics.median(times), "rss_before_mb": before_rss,
            "rss_growth_mb": rss_mb(pid) - before_rss, "files_before": before_files,
            "files_after": count_files(tmp)}


def flood(url: str, image: Path, n: int, timeout: float) -> dict:
    """``n`` requests submitted at once from one client: answered, refused as busy, other errors."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False, max_workers=n)  # every request in flight at once
    t = time.perf_counter()
    jobs = [client.submit(handle_file(str(image)), api_name="/predict") for _ in range(n)]
    answered = busy = other = hung = 0
    messages = set()
    for job in jobs:
        try:
            job.result(timeout=max(1.0, timeout - (time.perf_counter() - t)))
            answered += 1
        except TimeoutError:
            hung += 1
        except Exception as e:
            text = str(e)
            busy += "queue is full" in text.lower()
            other += "queue is full" not in text.lower()
            messages.add(text[:120])
    return {"submitted": n, "answered": answered, "busy": busy, "other_errors": other, "hung": hung,
            "seconds": time.perf_counter() - t, "messages": sorted(messages)}


def model_time(model: str, images: list, rounds: int = 3) -> float:
    """Median seconds of the model's own predict + Grad-CAM (``explain``) per image, in this process,
    with the app's thread setting."""
    import torch

    from brain_mri import BrainMRIClassifier, configure_threads

    before = torch.get_num_threads()
    configure_threads()
    clf = BrainMRIClassifier.from_pretrained(model)
    clf.explain(images[0])
    times = []
    for _ in range(rounds):
        for image in images:
            t = time.perf_counter()
            clf.explain(image)
            times.append(time.perf_counter() - t)
    torch.set_num_threads(before)
    return statistics.median(times)


ECHO_APP = """
import gradio as gr
with gr.Blocks() as demo:
    image, text = gr.Image(type="filepath"), gr.Textbox()
    gr.Button().click(lambda path: "ok", image, text, api_name="predict")
demo.queue().launch()
"""


def protocol_floor(images: list, tmp: Path) -> float:
    """Median seconds of one request to a trivial Gradio app that takes the same upload and does nothing:
    what uploading, queueing and answering cost before any work of ours."""
    from gradio_client import Client, handle_file

    (tmp / "echo_app.py").write_text(ECHO_APP)
    proc, url, _ = start_app(tmp / "echo_app.py", [])
    try:
        client = Client(url, verbose=False, download_files=False)
        times = []
        for image in images * 2:
            t = time.perf_counter()
            client.predict(handle_file(str(image)), api_name="/predict")
            times.append(time.perf_counter() - t)
        return statistics.median(times[len(images):])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--images", default=str(ROOT / "examples"), help="folder of slices to send")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--requests", type=int, default=20, help="per user")
    p.add_argument("--series", type=int, default=500)
    p.add_argument("--flood", type=int, default=200)
    p.add_argument("--flood-timeout", type=float, default=300)
    p.add_argument("--queue-size", type=int, default=64)
    p.add_argument("--cache-delete", default="5,20", help="Gradio's cache deletion FREQUENCY,AGE in seconds")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the model's own time and the do-nothing app (the tests check the app, not its overhead)")
    args = p.parse_args()
    images = sorted(f for f in Path(args.images).iterdir() if f.suffix.lower() in (".jpg", ".png", ".dcm"))
    tmp = Path(tempfile.mkdtemp(prefix="brain-mri-load-"))
    result = {"model_explain_s": None, "floor_s": None} if args.no_baselines else {
        "model_explain_s": model_time(args.model, images),
        "floor_s": protocol_floor([f for f in images if f.suffix != ".dcm"], tmp)}  # gr.Image reads no DICOM
    env = {"TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "BRAIN_MRI_CACHE_DELETE": args.cache_delete,
           "GRADIO_PROFILING": "1"}  # Gradio's own per-phase timings of each request, on the server
    with open(tmp.parent / f"{tmp.name}.log", "w") as log:
        proc, url, _ = start_app(ROOT / "app.py", ["--model", args.model, "--queue-size", str(args.queue_size)], env,
                                 log=log)
    try:
        from gradio_client import Client

        client = Client(url, verbose=False, download_files=False)
        for f in images:  # the first requests fill caches
            request(client, f)
        single = {f.name: request(client, f) for f in images}
        references = {name: details for name, (_, details) in single.items()}
        result["single_p50_s"] = statistics.median(t for t, _ in single.values())
        result["server"] = server_phases(url)
        result["load"] = load(url, images, references, args.users, args.requests)
        result["series"] = series(url, proc.pid, images, args.series, tmp)
        frequency, age = (int(v) for v in args.cache_delete.split(","))
        time.sleep(max(2 * age + frequency, 6))  # Gradio's deletion has run; the app keeps its own files 5 s
        request(client, images[0])  # which also clears the app's own older files
        result["series"]["files_after_cache_deletion"] = count_files(tmp)
        result["flood"] = flood(url, images[0], args.flood, args.flood_timeout)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if result["model_explain_s"] is not None:
        result["server_overhead_ms"] = (sum(result["server"][k] for k in ("upload", "preprocess", "fn_call", "postprocess"))
                                        - result["model_explain_s"] * 1000)
    print_table(result, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def print_table(r: dict, args) -> None:
    ld, s, f = r["load"], r["series"], r["flood"]
    print("| measure | value |\n|---|---:|")
    def ms(v, scale=1000):  # "–" where --no-baselines skipped it
        return "–" if v is None else f"{v * scale:.1f}"

    rows = [
        ("model's own predict + Grad-CAM, median (ms)", ms(r["model_explain_s"])),
        ("one user, one request end to end, median (ms)", ms(r["single_p50_s"])),
        ("the same request to a do-nothing Gradio app, median (ms)", ms(r["floor_s"])),
        ("on the server (Gradio's profile): upload + preprocess + handler + postprocess, medians (ms)",
         " + ".join(f"{r['server'][k]:.1f}" for k in ("upload", "preprocess", "fn_call", "postprocess"))),
        ("server-side overhead = server total - model's own time (ms)", ms(r.get("server_overhead_ms"), 1)),
        (f"{args.users} users x {args.requests}: failures / mismatches", f"{ld['failures']} / {ld['mismatches']}"),
        (f"{args.users} users x {args.requests}: p50 / p95 (ms)", f"{ld['p50_s'] * 1000:.0f} / {ld['p95_s'] * 1000:.0f}"),
        (f"{s['requests']} in a row: server RSS growth (MB)", f"{s['rss_growth_mb']:.1f} (from {s['rss_before_mb']:.0f})"),
        (f"{s['requests']} in a row: temporary files before / after / after cache deletion and one more request",
         f"{s['files_before']} / {s['files_after']} / {s['files_after_cache_deletion']}"),
        (f"flood of {f['submitted']} (queue {args.queue_size}): answered / busy / other / hung",
         f"{f['answered']} / {f['busy']} / {f['other_errors']} / {f['hung']} in {f['seconds']:.1f} s"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    if f["messages"]:
        print("flood messages:", "; ".join(f["messages"]), file=sys.stderr)
    if ld["first_failures"]:
        print("first failures:", "; ".join(ld["first_failures"]), file=sys.stderr)


if __name__ == "__main__":
    main()

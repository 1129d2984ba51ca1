#!/usr/bin/env python
"""How long `python app.py` takes until its page answers.

    python benchmarks/app_startup.py [--app app.py] [--runs 3] [-- APP ARGS...]

Each run starts the app on a free loopback port (offline: HF_HUB_OFFLINE=1, so a Hub model
falls back to the bundled one at once) and polls the page; prints a table of the runs.
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(app: Path, args: list, extra_env: dict | None = None, timeout: float = 300, log=subprocess.DEVNULL):
    """Starts ``app`` on a free loopback port, offline; returns ``(process, url, seconds until it answered)``."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", **(extra_env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(app), *args], cwd=app.parent, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{app} exited with status {proc.returncode} before it served a page")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc, url, time.perf_counter() - t0
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"{app} did not answer within {timeout} s")


def one_run(app: Path, args: list) -> float:
    proc, _, seconds = start_app(app, args)
    proc.terminate()
    proc.wait(timeout=30)
    return seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", default=str(Path(__file__).resolve().parent.parent / "app.py"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("app_args", nargs="*")
    args = p.parse_args()
    times = [one_run(Path(args.app).resolve(), args.app_args) for _ in range(args.runs)]
    print(f"{args.app}: start-up until the page answers, {args.runs} runs")
    print("| run | seconds |\n|---:|---:|")
    for i, t in enumerate(times, 1):
        print(f"| {i} | {t:.2f} |")
    print(f"| median | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()

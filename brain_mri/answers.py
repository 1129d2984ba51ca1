"""The files of one answer (views, plot, report): a fresh folder each, removed soon after Gradio copies them."""
from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ANSWERS = Path(tempfile.mkdtemp(prefix="brain-mri-answers-"))
ENCODERS = ThreadPoolExecutor(4, thread_name_prefix="png")
atexit.register(shutil.rmtree, ANSWERS, ignore_errors=True)


def new_output_folder(keep_seconds: float = 5) -> Path:
    """A fresh folder for one answer's files. Gradio copies them into its own cache (deleted on its
    schedule) as soon as the handler returns, so folders older than ``keep_seconds`` are removed here."""
    now = time.time()
    for old in ANSWERS.iterdir():
        try:
            stale = now - old.stat().st_mtime > keep_seconds
        except FileNotFoundError:  # another request removed it
            continue
        if stale:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=ANSWERS))


def save_png(array, path: Path) -> str:
    """Saves an image array as a fast PNG (zlib level 1: Gradio's own level 6 costs as much as the model)."""
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=1)
    return str(path)

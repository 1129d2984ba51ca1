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


def uploaded_files(files, uploads: Path) -> tuple[list[str], str]:
    """``(paths, name)`` of a scan sent to an API endpoint as files uploaded to this server (gradio's
    FileData dicts, ``handle_file`` on the client side).

    The endpoint gets the JSON as it was sent: a path that lies outside ``uploads`` is refused, never read.

    Raises:
        ValueError: nothing sent, or something that is not an upload of this server.
    """
    files = [files] if isinstance(files, dict) else list(files) if isinstance(files, list) else []
    paths = [f.get("path") for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)]
    uploads = uploads.resolve()
    if not paths or len(paths) != len(files) or not all(Path(p).resolve().is_relative_to(uploads) for p in paths):
        raise ValueError("Send the scan as uploaded files (gradio_client's handle_file): one NIfTI, zip or "
                         "multi-frame DICOM file, or the DICOM files of one series.")
    name = files[0].get("orig_name") if len(files) == 1 else None
    return paths, name or (Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} DICOM files")

"""Resumable training state: accelerate checkpoints swapped in whole, the best weights, the log."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


def atomic_write(path: Path, text: str):
    """Writes ``text`` beside ``path``, then renames it over: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(accelerator, ckpt_dir: Path, state: dict, ema=None):
    """save_state into a temporary folder, then swap it in: a kill never leaves a half checkpoint.

    The weight average (``ema``) goes beside it as safetensors rather than a pickle."""
    last, tmp, old = ckpt_dir / "last", ckpt_dir / "last.tmp", ckpt_dir / "last.old"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its RNG state before the folder moves
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        if ema is not None:
            from safetensors.torch import save_model

            save_model(ema.module, str(tmp / "ema.safetensors"), force_contiguous=True)
        if last.exists():
            os.replace(last, old)
        crash_point("checkpoint-swap")
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, ckpt_dir: Path, ema=None) -> dict | None:
    """Restores the last complete checkpoint; returns its trainer state, or None when there is none."""
    from safetensors.torch import load_model

    # A kill between the two renames of save_checkpoint leaves only last.old, which is complete.
    found = next((ckpt_dir / n for n in ("last", "last.old") if (ckpt_dir / n / STATE_FILE).is_file()), None)
    if found is None:
        return None
    accelerator.load_state(str(found))
    if ema is not None:
        load_model(ema.module, str(found / "ema.safetensors"))
    state = json.loads((found / STATE_FILE).read_text())
    logger.info("Resumed from %s after epoch %d", found, state["epoch"])
    return state


_CRASH_AT: str | None = None


def arm_crash_point() -> None:
    """Reads ``$BRAIN_MRI_CRASH_AT`` once, at the start of a run, for :func:`crash_point`."""
    global _CRASH_AT
    _CRASH_AT = os.environ.get("BRAIN_MRI_CRASH_AT") or None


def crash_point(name: str) -> None:
    """Fault injection for the resume tests: SIGKILLs this process here when ``$BRAIN_MRI_CRASH_AT`` (read by
    :func:`arm_crash_point`) is ``name`` (``step:N``: before training step N, counted from the first epoch;
    ``checkpoint-swap``: between the two renames of a checkpoint; ``export``: with half a model folder staged)."""
    if _CRASH_AT is not None and _CRASH_AT == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def staged(out: Path):
    """A fresh ``out/.export`` to write a model folder into: published into ``out`` when the block ends,
    removed when it fails (a full disk), so ``out`` keeps its previous files either way."""
    stage = out / ".export"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    from safetensors import SafetensorError

    try:
        yield stage
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):  # a full disk, a quota: one clear line
            raise OSError(f"Cannot write the model folder ({e}); {out} keeps its previous files.") from e
        raise
    publish(stage, out)


def publish(stage: Path, out: Path) -> None:
    """Moves every file of ``stage`` over its place in ``out``, then removes ``stage``. Renames within one
    disk need no space, so once ``stage`` is complete a full disk can no longer leave a mixed folder."""
    for src in sorted(p for p in stage.rglob("*") if p.is_file()):
        dst = out / src.relative_to(stage)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(stage)


def save_best(accelerator, model, path: Path):
    """The main process keeps ``model``'s weights as safetensors (atomically)."""
    from safetensors.torch import save_model

    if accelerator.is_main_process:
        tmp = path.with_name(path.name + ".tmp")
        save_model(accelerator.unwrap_model(model), str(tmp), force_contiguous=True)  # channels-last too
        os.replace(tmp, path)


def write_log(path: Path, history: list[dict]):
    """The per-epoch rows as ``training_log.csv``."""
    if not history:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    atomic_write(path, buf.getvalue())

"""The Hugging Face Hub from here: is it reachable, is a name a repo id, uploads.

Imports nothing of the package: data and model ask it before they try the network, so it
stands below them.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse


class HubError(RuntimeError):
    """A Hub operation failed; the message says why and what to do instead."""


def hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """``None`` when the Hub answers on its port, else a short reason.

    A quick socket check avoids huggingface_hub's retry loop (about 25 s) when offline.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"the Hugging Face Hub ({host}) is unreachable: {e.strerror or e}"
    return None


def is_hub_id(source) -> bool:
    """True when ``source`` is no local path but reads as a Hub repo id (``owner/name``, see :func:`check_repo_id`)."""
    if Path(str(source)).exists():
        return False
    try:
        check_repo_id(source)
    except HubError:
        return False
    return True


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is an ``owner/name`` Hub id; a path (absolute, ``..``, ``~``) or anything else is refused.

    Raises:
        HubError: not a repo id, with the rule.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(repo_id)
    try:
        if text.count("/") != 1 or text.startswith(("/", "~", ".")) or "\\" in text:
            raise HFValidationError("expected exactly owner/name")
        validate_repo_id(text)
    except HFValidationError as e:
        raise HubError(f"{text!r} is not a Hub repo id: expected owner/name (letters, digits, '-', '_', '.'; "
                       f"no '..', no path). {e}") from None
    return text


def push_to_hub(folder: Path, repo_id: str, token: str | None = None, private: bool = False,
                repo_type: str = "model", space_sdk: str | None = None) -> str:
    """Creates ``repo_id`` (if needed) and uploads ``folder``; returns the repo URL.

    The one upload path: a model folder (``train.py --push-to-hub``), a static gallery or the demo
    as a Space (``repo_type="space"`` with ``space_sdk`` "static" or "gradio"). The token comes
    from ``token``, ``HF_TOKEN`` or the cached login, and is never logged.

    Raises:
        HubError: offline, no token, or the Hub refused the upload; the folder stays as it is.
    """
    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id)
    later = f"upload it later with: hf upload {repo_id} {folder}" + (f" --repo-type {repo_type}" if repo_type != "model" else "")
    reason = hub_unreachable_reason()
    if reason:
        raise HubError(f"Cannot push to {repo_id}: {reason}. The folder {folder} is complete; {later}")
    token = token or get_token()
    if not token:
        raise HubError(f"Cannot push to {repo_id}: no Hugging Face token. Set HF_TOKEN or run `hf auth login`. "
                       f"The folder {folder} is complete; {later}")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                   commit_message=f"Upload brain-mri {repo_type}")
    except Exception as e:  # HTTP errors carry the reason; the token is not in them
        raise HubError(f"Upload of {folder} to {repo_id} failed: {type(e).__name__}: {e}") from e
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return getattr(commit, "repo_url", f"https://huggingface.co/{prefix}{repo_id}")


#: What a Space needs from a source checkout; the weights stay in the model repo the README names. ``docs``: the
#: README's links and its screenshot.
SPACE_FILES = ("app.py", "requirements.txt", "README.md", "pyproject.toml", "brain_mri", "examples", "docs")


#: requirements.txt's lines below this marker are for training only: the Space does not install them.
SERVING_ENDS = "# training only"


def stage_space(root: Path, out: Path) -> Path:
    """Writes the Space's files from checkout ``root`` into ``out`` (replaced): ``SPACE_FILES`` without caches,
    and a ``requirements.txt`` with what serving needs (the lines above ``# training only``; no test tools).

    Raises:
        HubError: a file missing from ``root``.
    """
    import shutil

    root, out = Path(root), Path(out)
    missing = [name for name in SPACE_FILES if not (root / name).exists()]
    if missing:
        raise HubError(f"{root.resolve().name} is not a brain-mri checkout: {', '.join(missing)} missing.")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in SPACE_FILES:
        src, dst = root / name, out / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi"))
        else:
            shutil.copy2(src, dst)
    pins = (root / "requirements.txt").read_text().split(SERVING_ENDS)[0]
    (out / "requirements.txt").write_text(pins.rstrip() + "\n")
    return out


def publish_space(root: Path, repo_id: str, token: str | None = None) -> str:
    """Uploads the demo in checkout ``root`` as a Gradio Space (:func:`stage_space`, no weights).

    Staged in a temporary folder that is always removed: offline or refused, nothing is left behind.

    Raises:
        HubError: offline, no token, a file missing from ``root``, or the Hub refused the upload.
    """
    import tempfile

    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="brain-mri-space-") as tmp:
        stage_space(root, Path(tmp) / "space")
        reason = hub_unreachable_reason()
        if reason:
            raise HubError(f"Cannot publish the Space {repo_id}: {reason}. Nothing was written.")
        return push_to_hub(Path(tmp) / "space", repo_id, token, repo_type="space", space_sdk="gradio")

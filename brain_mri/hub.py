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
    """True when ``source`` is no local path but reads as a Hub repo id (``owner/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(source)
    if "/" not in text or text.startswith((".", "/", "~")) or Path(text).exists():
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def push_to_hub(folder: Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Creates ``repo_id`` (if needed) and uploads ``folder``; returns the repo URL.

    The token comes from ``token``, ``HF_TOKEN`` or the cached login, and is never logged.

    Raises:
        HubError: offline, no token, or the Hub refused the upload.
    """
    from huggingface_hub import HfApi, get_token

    reason = hub_unreachable_reason()
    if reason:
        raise HubError(
            f"Cannot push to {repo_id}: {reason}. The model folder {folder} is complete; "
            f"upload it later with: hf upload {repo_id} {folder}"
        )
    token = token or get_token()
    if not token:
        raise HubError(
            f"Cannot push to {repo_id}: no Hugging Face token. Set HF_TOKEN or run `hf auth login`. "
            f"The model folder {folder} is complete."
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message="Upload brain-mri model")
    except Exception as e:  # HTTP errors carry the reason; the token is not in them
        raise HubError(f"Upload of {folder} to {repo_id} failed: {type(e).__name__}: {e}") from e
    return getattr(commit, "repo_url", f"https://huggingface.co/{repo_id}")

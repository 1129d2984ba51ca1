"""Export in timm's Hub format, the model card, and uploads through huggingface_hub."""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from .config import CLASS_NAMES, DISCLAIMER

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "model_card.md"  # ./model_card.md links here


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


def export_model(model: torch.nn.Module, out_dir: Path, data_config: dict, extra_config: dict | None = None) -> None:
    """Writes ``config.json`` and ``model.safetensors`` in timm's Hub format.

    The folder loads with ``timm.create_model("local-dir:...")``, transformers'
    ``AutoModelForImageClassification`` / ``pipeline`` and :class:`BrainMRIClassifier`.
    """
    import timm

    out_dir.mkdir(parents=True, exist_ok=True)
    timm.models.save_for_hf(
        model, str(out_dir),
        model_config={"label_names": list(CLASS_NAMES), "pretrained_cfg": {"license": "apache-2.0"}},
        data_config={k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")},
        safe_serialization=True,
    )
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # timm writes num_classes into model_args too; transformers then refuses the folder
    # (num_classes passed twice). It is already top level.
    cfg.get("model_args", {}).pop("num_classes", None)
    if not cfg.get("model_args"):
        cfg.pop("model_args", None)
    for k in ("tag", "origin_url", "paper_ids", "hf_hub_id"):
        cfg["pretrained_cfg"].pop(k, None)
    cfg.update(extra_config or {})
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def render_card(out_dir: Path, context: dict, template: Path = TEMPLATE) -> None:
    """Renders ``model_card.md`` (Jinja) into ``out_dir/README.md`` with ``ModelCardData``."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = []
    for split_name, m in context.get("eval_table", []):
        for metric, key in (("accuracy", "accuracy"), ("f1", "macro_f1")):
            results.append(EvalResult(
                task_type="image-classification", task_name="Image classification",
                dataset_type=context["dataset_id"], dataset_name=context["dataset_name"],
                dataset_split=split_name, metric_type=metric, metric_value=round(m[key], 4),
                metric_name=f"{metric} ({split_name})",
            ))
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "medical-imaging", "brain-mri", "grad-cam"],
        datasets=[context["dataset_id"]],
        metrics=["accuracy", "f1"],
        model_name=context["repo_name"],
        eval_results=results or None,
    )
    card = ModelCard.from_template(card_data, template_path=str(template), disclaimer=DISCLAIMER, **context)
    card.save(out_dir / "README.md")


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


def model_facts(source: str) -> dict:
    """What the app shows about a model: architecture, data, leak-free metrics from its card, link.

    Reads ``README.md`` (the model card) of a local folder, or of a Hub repo when online.
    """
    from huggingface_hub import ModelCard

    path = Path(source)
    facts = {"source": str(source), "link": str(path.resolve()) if path.is_dir() else f"https://huggingface.co/{source}",
             "arch": None, "dataset": None, "metrics": {}}
    try:
        card = ModelCard.load(path / "README.md" if path.is_dir() else source)
    except Exception:  # no card, or offline: the app still works without the facts
        return facts
    data = card.data
    facts["dataset"] = (data.datasets or [None])[0]
    for r in data.eval_results or []:
        facts["metrics"].setdefault(r.dataset_split, {})[r.metric_type] = r.metric_value
    cfg = path / "config.json"
    if cfg.is_file():
        facts["arch"] = json.loads(cfg.read_text()).get("architecture")
    return facts

"""The model card: its variables, rendering (``model_card.md``), re-rendering, and the facts the app shows."""
from __future__ import annotations

import json
import re
from pathlib import Path

from .config import (CLASS_NAMES, DATASET_ID, DATASET_NAME, DISCLAIMER, LICENSE, OUTSIDE_KAGGLE, TrainConfig,
                     non_commercial)

TEMPLATE = Path(__file__).resolve().parent / "model_card.md"  # ./model_card.md links here
CARD_CONTEXT = "card_context.json"
EXTERNAL = "external.json"  # benchmarks/external.py --write-card: the model on brain MRI from outside the Kaggle set


def card_context(cfg: TrainConfig, metrics: dict, figures: list, data_config: dict, hardware: str,
                 train_seconds: float) -> dict:
    """Variables for ``model_card.md``.

    Args:
        cfg: the run's configuration.
        metrics: what ``metrics.json`` holds (test, validation, duplicates, sizes, training).
        figures: figure paths relative to the model folder.
        data_config: the model's timm data config.
        hardware: one line on the processes, device, CPU and precision it trained on.
        train_seconds: time spent in training epochs (with validation).
    """
    from .config import MRI_AUGMENT_PRESETS as PRESETS  # not training code: serving imports card

    data = str(cfg.data)
    is_local = Path(data).is_dir()
    test, training = metrics["test"], metrics["training"]
    eval_table = [(f"test ({k.replace('_', '-')})", test[k]["calibrated"]) for k in ("leak_free", "full") if k in test]
    return {
        "repo_name": cfg.push_to_hub or Path(cfg.output_dir).name,
        "repo_id": cfg.push_to_hub or "",
        "arch": cfg.model,
        "image_size": cfg.image_size,
        "data_config": data_config,
        "dataset_id": DATASET_ID if is_local else data,
        "dataset_name": DATASET_NAME if is_local else data,
        "pretrained": training["pretrained"],
        "pretrained_flag": cfg.pretrained,
        "initialisation": training.get("initialisation"),
        "command": cfg.command,
        "seed": cfg.seed,
        "epochs_run": training["epochs_run"],
        "best_epoch": training["best_epoch"],
        "train_minutes": round(train_seconds / 60, 1),
        "hardware": hardware,
        "metrics": metrics,
        "eval_table": eval_table,
        "figures": figures,
        "temperature": metrics["temperature"],
        "dup": metrics["duplicates"],
        "sizes": metrics["split_sizes"],
        "skipped": metrics["skipped_files"],
        "class_names": list(CLASS_NAMES),
        "notes": Path(cfg.card_notes).read_text() if cfg.card_notes else "",
        "mri_augment": {"preset": cfg.mri_augment, "p": PRESETS[cfg.mri_augment]} if PRESETS[cfg.mri_augment] else None,
    }


def weights_license(metrics: dict) -> str:
    """The Hub licence of the weights: the code's, unless a training source allows non-commercial use only.

    Trained on such a source, the weights take its licence (e.g. BraTS 2013's CC BY-NC-SA 3.0 becomes
    ``cc-by-nc-sa-3.0``); two different ones, or one the Hub has no id for, become ``other``.
    """
    sources = ((metrics or {}).get("other_sources") or {}).get("sources", {})
    nc = {f["licence"].strip().lower().replace(" ", "-") for f in sources.values() if non_commercial(f["licence"])}
    if not nc:
        return LICENSE
    (only, *rest) = nc
    return only if not rest and re.fullmatch(r"cc-by-nc(-sa|-nd)?-[234]\.0", only) else "other"


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
        license=weights_license(context.get("metrics")),
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "medical-imaging", "brain-mri", "grad-cam"],
        datasets=[context["dataset_id"]],
        metrics=["accuracy", "f1"],
        model_name=context["repo_name"],
        eval_results=results or None,
    )
    card = ModelCard.from_template(card_data, template_path=str(template), disclaimer=DISCLAIMER,
                                   outside_kaggle=OUTSIDE_KAGGLE, **context)
    card.save(out_dir / "README.md")


def write_card(out_dir: Path, context: dict) -> None:
    """Renders the card and keeps its variables, so that :func:`rerender_card` can add notes later."""
    saved = {k: v for k, v in context.items() if k != "metrics"}  # metrics.json holds those
    (out_dir / CARD_CONTEXT).write_text(json.dumps(saved, indent=1))
    render_card(out_dir, context)


def rerender_card(folder: Path, notes: str | None = None) -> None:
    """Renders ``folder/README.md`` again from its saved context and metrics; new ``notes`` are kept
    for the next rendering, without them the saved ones stay."""
    context = json.loads((folder / CARD_CONTEXT).read_text())
    if notes is not None:
        context["notes"] = notes
        (folder / CARD_CONTEXT).write_text(json.dumps(context, indent=1))
    context["metrics"] = json.loads((folder / "metrics.json").read_text())
    context["eval_table"] = [tuple(row) for row in context["eval_table"]]
    if (folder / EXTERNAL).is_file():
        context["external"] = json.loads((folder / EXTERNAL).read_text())
    render_card(folder, context)


def save_external(folder: Path, result: dict) -> None:
    """Keeps ``result`` (``command``, ``date``, ``table``, ``rows`` of benchmarks/external.py) beside the model
    and renders its card again with an "External validation" table."""
    (folder / EXTERNAL).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    rerender_card(folder)


def model_facts(source: str) -> dict:
    """What the app shows about a model: architecture, data, leak-free metrics from its card, link.

    Reads ``README.md`` (the model card) of a local folder, or of a Hub repo when online.
    """
    from huggingface_hub import ModelCard

    path = Path(source)
    facts = {"source": str(source), "link": str(path.resolve()) if path.is_dir() else f"https://huggingface.co/{source}",
             "arch": None, "dataset": None, "metrics": {}, "initialisation": None, "external": None}
    try:
        card = ModelCard.load(path / "README.md" if path.is_dir() else source)
    except Exception:  # no card, or offline: the app still works without the facts
        return facts
    data = card.data
    facts["external"] = card_section(card.text, "External validation")
    facts["dataset"] = (data.datasets or [None])[0]
    for r in data.eval_results or []:
        facts["metrics"].setdefault(r.dataset_split, {})[r.metric_type] = r.metric_value
    cfg = path / "config.json"
    if cfg.is_file():
        config = json.loads(cfg.read_text())
        facts["arch"] = config.get("architecture")
        init = config.get("brain_mri", {}).get("initialisation")
        facts["initialisation"] = init["source"] if init else None
    return facts


def card_section(text: str, title: str) -> str | None:
    """The body of the card's ``## title`` section (up to the next ``## ``), or None when it has none."""
    head = f"\n## {title}\n"
    if head not in "\n" + text:
        return None
    return ("\n" + text).split(head, 1)[1].split("\n## ", 1)[0].strip() or None

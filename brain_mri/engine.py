"""The training loop (accelerate), evaluation passes, and one whole run: data -> export."""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .config import CLASS_NAMES
from .data import ArrayDataset, BatchAugment, DataBundle, Normalize, prepare_data
from .metrics import classification_metrics, evaluate_logits, fit_temperature, softmax, write_figures
from .model import create_model, fold_temperature, model_data_config

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CARD_CONTEXT = "card_context.json"


def make_loader(split, batch_size: int, shuffle: bool, workers: int, seed: int = 0, drop_last: bool = False):
    """DataLoader over decoded uint8 arrays; workers only slice tensors, so they stay cheap."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        ArrayDataset(split), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
        num_workers=workers, persistent_workers=workers > 0, generator=g,
    )


def make_mixup(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
    """timm's batch Mixup / CutMix (switching 50/50 when both alphas are set), or None when both are 0.

    Its own label smoothing stays off: the loss smooths the mixed targets, as it does plain labels.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"--mixup and --cutmix take an alpha >= 0, got {mixup_alpha} and {cutmix_alpha}.")
    if not (mixup_alpha or cutmix_alpha):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=0.0, num_classes=num_classes)


def mix_batch(mixup, inputs: torch.Tensor, labels: torch.Tensor):
    """(inputs, targets): mixed inputs and soft targets, or the batch as it is without ``mixup`` or
    when the batch is odd (timm pairs each image with its mirror in the batch)."""
    if mixup is None or inputs.shape[0] % 2:
        return inputs, labels
    return mixup(inputs, labels)


def train_one_epoch(accelerator, model, loader, optimizer, scheduler, criterion, normalize, augment, epoch,
                    total_epochs, seed, ema=None, mixup=None):
    """One epoch; returns (mean loss, accuracy) over all processes.

    ``ema``: a timm ModelEmaV3 to update; ``mixup``: from :func:`make_mixup` (accuracy is then
    counted against the unmixed labels).
    """
    model.train()
    gen = torch.Generator().manual_seed(seed * 1000 + epoch * 10 + accelerator.process_index)
    loss_sum = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device)
    seen = torch.zeros((), device=accelerator.device)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{total_epochs}", disable=not accelerator.is_local_main_process,
               leave=False, dynamic_ncols=True)
    step = epoch * math.ceil(len(loader) / accelerator.gradient_accumulation_steps)  # optimizer steps so far
    for images, labels, _ in bar:
        with accelerator.accumulate(model):
            inputs, targets = mix_batch(mixup, normalize(augment(images, gen)), labels)
            logits = model(inputs)
            loss = criterion(logits, targets)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if ema is not None and accelerator.sync_gradients:
            step += 1
            ema.update(accelerator.unwrap_model(model), step=step)
        n = labels.shape[0]
        loss_sum += loss.detach().float() * n
        correct += (logits.argmax(1) == labels).sum()
        seen += n
        bar.set_postfix(loss=f"{loss_sum.item() / seen.item():.3f}", acc=f"{correct.item() / seen.item():.3f}",
                        lr=f"{scheduler.get_last_lr()[0]:.2e}")
    totals = accelerator.reduce(torch.stack([loss_sum, correct, seen]), reduction="sum")
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


@torch.no_grad()
def predict_logits(accelerator, model, loader, normalize):
    """Logits, labels and dataset indices of every sample, gathered across processes, in order."""
    model.eval()
    outs = []
    for images, labels, idx in loader:
        logits = model(normalize(images)).float()
        outs.append(accelerator.gather_for_metrics((logits, labels, idx)))
    logits, labels, idx = (torch.cat(t).cpu().numpy() for t in zip(*outs))
    order = np.argsort(idx, kind="stable")
    return logits[order], labels[order]


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_checkpoint(accelerator, ckpt_dir: Path, state: dict, ema=None):
    """save_state into a temporary folder, then swap it in: a kill never leaves a half checkpoint.

    The weight average (``ema``) goes beside it as safetensors rather than a pickle."""
    last, tmp, old = ckpt_dir / "last", ckpt_dir / "last.tmp", ckpt_dir / "last.old"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        if ema is not None:
            from safetensors.torch import save_model

            save_model(ema.module, str(tmp / "ema.safetensors"))
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _find_checkpoint(ckpt_dir: Path) -> Path | None:
    # A kill between the two renames leaves only last.old, which is complete.
    for name in ("last", "last.old"):
        if (ckpt_dir / name / STATE_FILE).is_file():
            return ckpt_dir / name
    return None


def _save_best(accelerator, model, path: Path):
    from safetensors.torch import save_model

    if accelerator.is_main_process:
        tmp = path.with_name(path.name + ".tmp")
        save_model(accelerator.unwrap_model(model), str(tmp))
        os.replace(tmp, path)


def _write_log(path: Path, history: list[dict]):
    if not history:
        return
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    _atomic_write(path, buf.getvalue())


def run_training(args) -> Path:
    """Trains, calibrates, evaluates and exports; returns the model folder.

    ``args`` is the namespace of ``train.py``.
    """
    mixup = make_mixup(args.mixup, args.cutmix, len(CLASS_NAMES))  # a bad alpha fails before anything is written
    accelerator = Accelerator(
        mixed_precision=None if args.mixed_precision == "no" else args.mixed_precision,
        gradient_accumulation_steps=args.grad_accum,
        cpu=args.cpu,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        force=True)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    if not accelerator.is_main_process:
        logging.getLogger("brain_mri").setLevel(logging.ERROR)
    set_seed(args.seed)
    out = Path(args.output_dir)
    ckpt_dir = out / "checkpoints"
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "training_args.json", json.dumps(
            {**vars(args), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}, indent=2))
    accelerator.wait_for_everyone()
    logger.info("%d process(es), device %s, mixed precision %s", accelerator.num_processes,
                accelerator.device, accelerator.mixed_precision)

    model, used_pretrained = create_model(args.model, args.pretrained, args.image_size)
    data_config = model_data_config(model, args.image_size)
    bundle = prepare_data(args.data, data_config, args.val_fraction, args.seed, drop_leaks=not args.keep_leaks,
                          progress=accelerator.is_local_main_process)
    logger.info("images: train %d, val %d, test %d (leak-free %d)", len(bundle.train), len(bundle.val),
                len(bundle.test), int(bundle.test_leak_free.sum()))

    # each process needs at least one full batch of its shard
    batch = max(1, min(args.batch_size, len(bundle.train) // accelerator.num_processes))
    train_loader = make_loader(bundle.train, batch, True, args.workers, args.seed, drop_last=True)
    val_loader = make_loader(bundle.val, args.batch_size, False, 0)
    test_loader = make_loader(bundle.test, args.batch_size, False, 0)
    normalize = Normalize(data_config["mean"], data_config["std"]).to(accelerator.device)
    augment = BatchAugment()

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    model, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader)
    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum)
    total_steps = steps_per_epoch * args.epochs
    from transformers import get_cosine_schedule_with_warmup

    # accelerate steps a prepared scheduler once per process per optimizer step
    scheduler = accelerator.prepare(get_cosine_schedule_with_warmup(
        optimizer, int(args.warmup_epochs * steps_per_epoch) * accelerator.num_processes,
        total_steps * accelerator.num_processes))
    ema = None
    if args.model_ema:
        from timm.utils import ModelEmaV3

        # the average of the weights is what gets validated, kept and exported
        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=args.model_ema, use_warmup=True)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)  # takes soft targets too
    val_criterion = torch.nn.CrossEntropyLoss()

    state = {"epoch": 0, "best_f1": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [], "train_seconds": 0.0}
    if args.resume:
        found = _find_checkpoint(ckpt_dir)
        if found:
            accelerator.load_state(str(found))
            state = json.loads((found / STATE_FILE).read_text())
            if ema is not None:
                from safetensors.torch import load_model

                load_model(ema.module, str(found / "ema.safetensors"))
            logger.info("Resumed from %s after epoch %d", found, state["epoch"])
        else:
            logger.info("--resume: no checkpoint in %s, starting from scratch", ckpt_dir)

    best_path = ckpt_dir / "best.safetensors"
    while state["epoch"] < args.epochs and state["bad_epochs"] < args.patience:
        epoch = state["epoch"]
        t0 = time.time()
        train_loss, train_acc = train_one_epoch(accelerator, model, train_loader, optimizer, scheduler, criterion,
                                                normalize, augment, epoch, args.epochs, args.seed, ema, mixup)
        evaluated = model if ema is None else ema.module
        logits, labels = predict_logits(accelerator, evaluated, val_loader, normalize)
        m = classification_metrics(labels, softmax(logits))
        val_loss = float(val_criterion(torch.from_numpy(logits), torch.from_numpy(labels)))
        state["train_seconds"] += time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "train_acc": round(train_acc, 5),
               "val_loss": round(val_loss, 5), "val_acc": round(m["accuracy"], 5),
               "val_macro_f1": round(m["macro_f1"], 5), "lr": scheduler.get_last_lr()[0],
               "seconds": round(time.time() - t0, 1)}
        state["history"].append(row)
        if m["macro_f1"] > state["best_f1"]:
            state.update(best_f1=m["macro_f1"], best_epoch=epoch + 1, bad_epochs=0)
            _save_best(accelerator, evaluated, best_path)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        logger.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f | %.0fs",
                    epoch + 1, args.epochs, train_loss, train_acc, val_loss, m["accuracy"], m["macro_f1"],
                    row["seconds"])
        _save_checkpoint(accelerator, ckpt_dir, state, ema)
        if accelerator.is_main_process:
            _write_log(out / "training_log.csv", state["history"])
    if state["bad_epochs"] >= args.patience:
        logger.info("Early stop: validation macro-F1 has not improved for %d epochs", args.patience)

    # Final evaluation in float32 with the best weights, so that any loader reproduces it.
    accelerator.wait_for_everyone()
    from safetensors.torch import load_model

    final = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    load_model(final, str(best_path))  # to CPU, then copied onto the device
    val_logits, val_labels = predict_logits(accelerator, final, val_loader, normalize)
    test_logits, test_labels = predict_logits(accelerator, final, test_loader, normalize)
    temperature = fit_temperature(val_logits, val_labels)
    logger.info("temperature %.4f (fitted on validation)", temperature)

    if accelerator.is_main_process:
        export = copy.deepcopy(final).float().cpu()
        fold_temperature(export, temperature)
        write_report(
            out, export, data_config, bundle, test_logits, test_labels, temperature,
            val_metrics=classification_metrics(val_labels, softmax(val_logits, temperature)),
            history=state["history"], args=args, used_pretrained=used_pretrained,
            train_seconds=state["train_seconds"], best_epoch=state["best_epoch"],
            processes=accelerator.num_processes, device=str(accelerator.device),
            mixed_precision=str(accelerator.mixed_precision),
        )
        if not args.keep_checkpoints:
            shutil.rmtree(ckpt_dir / "last", ignore_errors=True)
        logger.info("Model folder: %s", out)
    accelerator.wait_for_everyone()
    accelerator.end_training()

    if args.push_to_hub and accelerator.is_main_process:
        from .hub import push_to_hub

        url = push_to_hub(out, args.push_to_hub)
        logger.info("Pushed to %s", url)
    return out


def write_predictions(path: Path, names, labels, probs, leak_free):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "predicted", "leak_free", *[f"p_{c}" for c in CLASS_NAMES]])
        for n, y, p, lf in zip(names, labels, probs, leak_free):
            w.writerow([n, CLASS_NAMES[y], CLASS_NAMES[int(p.argmax())], int(lf), *[f"{v:.6f}" for v in p]])


def write_report(out: Path, model, data_config, bundle: DataBundle, test_logits, test_labels, temperature,
                 val_metrics, history, args, used_pretrained, train_seconds, best_epoch, processes, device,
                 mixed_precision):
    """Exports the model folder: weights, config, metrics, figures, predictions, card."""
    from .hub import export_model, render_card

    export_model(model, out, data_config)
    test = evaluate_logits(test_logits, test_labels, temperature, bundle.test_leak_free)
    metrics = {
        "temperature": temperature,
        "validation": val_metrics,
        "test": test,
        "duplicates": bundle.report.as_dict(),
        "skipped_files": [n for n, _ in bundle.skipped],
        "split_sizes": {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
                        "test_leak_free": int(bundle.test_leak_free.sum())},
        "training": {"seconds": round(train_seconds, 1), "epochs_run": len(history), "best_epoch": best_epoch,
                     "pretrained": used_pretrained},
    }
    _atomic_write(out / "metrics.json", json.dumps(metrics, indent=1))
    write_predictions(out / "test_predictions.csv", bundle.test.names, test_labels,
                      softmax(test_logits, temperature), bundle.test_leak_free)
    figures = write_figures(out, test_labels, test_logits, temperature, bundle.test_leak_free, history)
    _write_log(out / "training_log.csv", history)
    context = card_context(metrics, figures, args, used_pretrained, train_seconds, best_epoch, processes, device,
                           mixed_precision, data_config, len(history))
    # kept so that `python -m brain_mri card` can render the card again with more notes
    _atomic_write(out / CARD_CONTEXT, json.dumps({k: v for k, v in context.items() if k != "metrics"}, indent=1))
    render_card(out, context)


def rerender_card(folder: Path, notes: str | None = None) -> None:
    """Renders ``folder/README.md`` again from its saved context and metrics, with new ``notes``."""
    from .hub import render_card

    context = json.loads((folder / CARD_CONTEXT).read_text())
    context["metrics"] = json.loads((folder / "metrics.json").read_text())
    context["eval_table"] = [tuple(row) for row in context["eval_table"]]
    if notes is not None:
        context["notes"] = notes
    render_card(folder, context)


def card_context(metrics, figures, args, used_pretrained, train_seconds, best_epoch, processes, device,
                 mixed_precision, data_config, epochs_run) -> dict:
    """Variables for ``model_card.md``."""
    data = str(args.data)
    is_local = Path(data).is_dir()
    command = json.loads((Path(args.output_dir) / "training_args.json").read_text())["command"]
    test = metrics["test"]
    eval_table = [(f"test ({k.replace('_', '-')})", test[k]["calibrated"]) for k in ("leak_free", "full") if k in test]
    return {
        "repo_name": args.push_to_hub or Path(args.output_dir).name,
        "repo_id": args.push_to_hub or "",
        "arch": args.model,
        "image_size": args.image_size,
        "data_config": data_config,
        "dataset_id": "masoudnickparvar/brain-tumor-mri-dataset" if is_local else data,
        "dataset_name": "Brain Tumor MRI Dataset (Kaggle)" if is_local else data,
        "pretrained": used_pretrained,
        "pretrained_flag": args.pretrained,
        "command": command,
        "seed": args.seed,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "train_minutes": round(train_seconds / 60, 1),
        "hardware": f"{processes} x {device} ({platform.processor() or platform.machine()}, "
                    f"{os.cpu_count()} CPU threads), torch {torch.__version__}, mixed precision {mixed_precision}",
        "metrics": metrics,
        "eval_table": eval_table,
        "figures": figures,
        "temperature": metrics["temperature"],
        "dup": metrics["duplicates"],
        "sizes": metrics["split_sizes"],
        "skipped": metrics["skipped_files"],
        "class_names": list(CLASS_NAMES),
        "notes": Path(args.card_notes).read_text() if args.card_notes else "",
    }

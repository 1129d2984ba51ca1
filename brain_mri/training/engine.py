"""Training with accelerate: one epoch, checkpoints, the loop, and one whole run from data to model folder."""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed

from ..card import card_context, weights_license, write_card
from .checkpoints import (
    arm_crash_point,
    atomic_write,
    crash_point,
    load_checkpoint,
    save_best,
    save_checkpoint,
    staged,
    write_log,
)
from ..config import CLASS_NAMES, TrainConfig
from .data import DataBundle, make_loader, prepare_data
from ..evaluation.evaluate import cam_grid, cam_rows, fit_ood, predict_logits, write_predictions
from ..evaluation.localise import load_boxes, summarise
from ..evaluation.metrics import (
    classification_metrics,
    evaluate_logits,
    fit_temperature,
    softmax,
    write_figures,
)
from ..model import (
    create_model,
    export_model,
    fold_temperature,
    freeze_stem,
    model_data_config,
)
from .mri_augment import from_preset
from .trainer import Trainer
from ..transforms import BatchAugment, Normalize, make_mixup
from .tumour_present import TumourBatches, add_tumour_present, called_tumour

logger = logging.getLogger(__name__)

def fast_bf16(cpu: bool = False) -> bool:
    """Whether bf16 autocast speeds training up on the device a run will use: a CUDA GPU with bf16,
    or a CPU with native bf16 (AVX-512 BF16 or AMX). Emulated bf16 on an AVX2-only CPU ran 14x
    slower than fp32."""
    if torch.cuda.is_available() and not cpu:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probes):
        return any(p() for p in probes if p is not None)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # older torch: oneDNN's own answer


def resolve_mixed_precision(choice: str, cpu: bool = False) -> str:
    """``auto`` -> ``bf16`` where :func:`fast_bf16`, else ``no`` (fp32); other choices stay as they are."""
    if choice != "auto":
        return choice
    return "bf16" if fast_bf16(cpu) else "no"


# ----------------------------------------------------------------------------- the run
def run_training(cfg: TrainConfig) -> Path:
    """Trains, calibrates, evaluates and exports; returns the model folder."""
    arm_crash_point()
    cfg.check()  # bad flags fail before anything is written
    if cfg.box_loss and not load_boxes(cfg.data):
        raise ValueError(f"--box-loss needs tumour boxes: {cfg.data} has no tumour_boxes.csv (see the dataset README).")
    mixup = make_mixup(cfg.mixup, cfg.cutmix, len(CLASS_NAMES))  # a bad alpha fails before anything is written
    ood_backbone = _ood_backbone(cfg)  # its weights are found and mapped now, not after the run
    if cfg.push_to_hub:  # a bad repo id fails now, not after the run
        from ..hub import check_repo_id

        check_repo_id(cfg.push_to_hub)
    precision = resolve_mixed_precision(cfg.mixed_precision, cfg.cpu)
    # a seedable sampler shuffles each epoch from (seed, epoch) alone: a resumed run sees the same order
    accelerator = Accelerator(mixed_precision=None if precision == "no" else precision,
                              gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed))
    if not accelerator.is_main_process:
        logging.getLogger("brain_mri").setLevel(logging.ERROR)  # one process speaks
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    logger.info("%d process(es), device %s, mixed precision %s%s", accelerator.num_processes, accelerator.device,
                accelerator.mixed_precision, " (--mixed-precision auto)" if cfg.mixed_precision == "auto" else "")
    model, init = create_model(cfg.model, cfg.pretrained, cfg.image_size)
    if cfg.freeze_stem:
        logger.info("frozen: %s", ", ".join(freeze_stem(model, cfg.model)))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if accelerator.is_main_process:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write(out / "training_args.json", json.dumps({**asdict(cfg), "initialisation": init}, indent=2))
    accelerator.wait_for_everyone()
    data_config = model_data_config(model, cfg.image_size, cfg.head_crop, cfg.cam_layer)
    if cfg.box_loss:
        from .guidance import check_guidable

        check_guidable(model)  # before the data is decoded
    bundle = prepare_data(cfg.data, data_config, cfg.val_fraction, cfg.seed, drop_leaks=not cfg.keep_leaks,
                          progress=accelerator.is_local_main_process)
    if cfg.tumour_present:  # slices known only to hold a tumour, for the partial-label loss
        add_tumour_present(bundle, cfg.tumour_present, data_config, cfg.tumour_present_held_out, cfg.seed,
                           accelerator.is_local_main_process)
    if cfg.extra_sources:  # other-source slices, drawn beside the Kaggle ones
        _add_extra(cfg, accelerator, bundle, data_config, init)
    logger.info("images: train %d, val %d, test %d (leak-free %d)", len(bundle.train), len(bundle.val),
                len(bundle.test), int(bundle.test_leak_free.sum()))
    trainer, loaders = _prepare(cfg, accelerator, model, data_config, bundle, mixup)
    state = _fit(cfg, trainer, loaders, out)

    accelerator.wait_for_everyone()
    _finish(cfg, trainer, loaders, bundle, data_config, state, init, ood_backbone)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if cfg.push_to_hub and accelerator.is_main_process:
        from ..hub import push_to_hub

        logger.info("Pushed to %s", push_to_hub(out, cfg.push_to_hub))
    return out


def _add_extra(cfg: TrainConfig, accelerator, bundle: DataBundle, data_config: dict, init) -> None:
    """The other sources into ``bundle``; their sampling shares beside the flags in ``training_args.json``."""
    from .mixing import add_extra

    add_extra(bundle, cfg, data_config, accelerator.is_local_main_process)
    if accelerator.is_main_process:
        atomic_write(Path(cfg.output_dir) / "training_args.json", json.dumps(
            {**asdict(cfg), "initialisation": init, "extra_source_shares": bundle.extra_shares}, indent=2))


def _prepare(cfg: TrainConfig, accelerator, model, data_config, bundle: DataBundle, mixup):
    """Loaders, optimiser, schedule and weight average, prepared by accelerate."""
    # each process needs at least one full batch of its shard
    batch = max(1, min(cfg.batch_size, len(bundle.train) // accelerator.num_processes))
    train, sampler = bundle.train, None
    if bundle.extra_train is not None:
        from .mixing import MixedSampler, join

        train = join(bundle.train, bundle.extra_train)
        sampler = MixedSampler(len(bundle.train), bundle.extra_weights, cfg.extra_share, cfg.seed)
    train_loader = make_loader(train, batch, True, cfg.workers, cfg.seed, True, from_preset(cfg.mri_augment), sampler)
    val_loader = make_loader(bundle.val, cfg.batch_size, False, 0)
    test_loader = make_loader(bundle.test, cfg.batch_size, False, 0)
    optimizer = make_optimizer(model, cfg)
    model, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    from transformers import get_cosine_schedule_with_warmup

    # accelerate steps a prepared scheduler once per process per optimizer step
    scheduler = accelerator.prepare(get_cosine_schedule_with_warmup(
        optimizer, int(cfg.warmup_epochs * steps_per_epoch) * accelerator.num_processes,
        steps_per_epoch * cfg.epochs * accelerator.num_processes))
    ema = None
    if cfg.model_ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=cfg.model_ema, use_warmup=True)
    trainer = Trainer(accelerator, model, optimizer, scheduler,
                      criterion=torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),  # soft targets too
                      normalize=Normalize(data_config["mean"], data_config["std"], cfg.channels_last).to(accelerator.device),
                      augment=BatchAugment(), ema=ema, mixup=mixup, guide=_guide(cfg, accelerator.unwrap_model(model), bundle, data_config),
                      tumour=bundle.tumour_train and TumourBatches(bundle.tumour_train, cfg.tumour_present_batch,
                                                                   cfg.tumour_present_weight, cfg.seed, from_preset(cfg.mri_augment)))
    return trainer, {"train": train_loader, "val": val_loader, "test": test_loader}


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """timm's AdamW (no weight decay on biases and norms); with ``--layer-decay`` each block's learning
    rate is the next one's times the decay, the head's the full one: a pretrained backbone moves less."""
    from timm.optim import create_optimizer_v2

    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    layer_decay=cfg.layer_decay or None)
    for group in optimizer.param_groups:  # timm's schedulers apply lr_scale; the cosine schedule here scales lr
        group["lr"] = cfg.lr * group.pop("lr_scale", 1.0)
    return optimizer


def _guide(cfg: TrainConfig, model, bundle: DataBundle, data_config: dict):
    """The box guidance of ``--box-loss``, from the training split's boxes only (never validation or test)."""
    if not cfg.box_loss:
        return None
    from .guidance import Guide, view_boxes

    boxes = view_boxes(bundle.train.names, bundle.train.regions, data_config["input_size"][-1],
                       load_boxes(cfg.data), "Training")
    if bundle.extra_train is not None:  # the sampler's index order: Kaggle, then the other sources
        boxes = np.concatenate([boxes, bundle.extra_train.boxes])
    logger.info("--box-loss %.3g: %d boxed training images", cfg.box_loss, int((~np.isnan(boxes).any(1)).sum()))
    return Guide(model, boxes, cfg.box_loss)


def _fit(cfg: TrainConfig, trainer: Trainer, loaders: dict, out: Path) -> dict:
    """Epochs until ``cfg.epochs`` or early stop, resuming and checkpointing; returns the trainer state."""
    accelerator, ckpt_dir = trainer.accelerator, out / "checkpoints"
    state = {"epoch": 0, "best_f1": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [], "train_seconds": 0.0}
    if cfg.resume:
        resumed = load_checkpoint(accelerator, ckpt_dir, trainer.ema)
        if resumed is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", ckpt_dir)
        state = resumed or state
    val_criterion = torch.nn.CrossEntropyLoss()
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch, t0 = state["epoch"], time.time()
        loaders["train"].set_epoch(epoch)
        train_loss, train_acc = trainer.train_epoch(loaders["train"], epoch, cfg.epochs, cfg.seed)
        logits, labels = predict_logits(accelerator, trainer.evaluated, loaders["val"], trainer.normalize)
        m = classification_metrics(labels, softmax(logits))
        val_loss = float(val_criterion(torch.from_numpy(logits), torch.from_numpy(labels)))
        state["train_seconds"] += time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "train_acc": round(train_acc, 5),
               "val_loss": round(val_loss, 5), "val_acc": round(m["accuracy"], 5),
               "val_macro_f1": round(m["macro_f1"], 5), "lr": trainer.scheduler.get_last_lr()[0],
               "seconds": round(time.time() - t0, 1)}
        state["history"].append(row)
        if m["macro_f1"] > state["best_f1"]:
            state.update(best_f1=m["macro_f1"], best_epoch=epoch + 1, bad_epochs=0)
            save_best(accelerator, trainer.evaluated, ckpt_dir / "best.safetensors")
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        logger.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f | %.0fs",
                    epoch + 1, cfg.epochs, train_loss, train_acc, val_loss, m["accuracy"], m["macro_f1"],
                    row["seconds"])
        save_checkpoint(accelerator, ckpt_dir, state, trainer.ema)
        if accelerator.is_main_process:
            write_log(out / "training_log.csv", state["history"])
    if state["bad_epochs"] >= cfg.patience:
        logger.info("Early stop: validation macro-F1 has not improved for %d epochs", cfg.patience)
    return state


def _localisation(cfg: TrainConfig, model, bundle: DataBundle, data_config: dict, metrics: dict, stage: Path) -> list:
    """With tumour boxes beside the data: Grad-CAM localisation on validation (for choosing) and Testing
    (for measurement only) into ``metrics``, and a grid of Testing overlays; returns the figure paths."""
    boxes = load_boxes(cfg.data)
    if not boxes:
        return []
    metrics["localisation"] = {name: summarise(cam_rows(model, split, data_config, boxes, folder))
                               for name, split, folder in (("validation", bundle.val, "Training"),
                                                           ("test", bundle.test, "Testing"))}
    path = stage / "figures" / "cam_grid.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return ["figures/cam_grid.png"] if cam_grid(model, bundle.test, data_config, boxes, "Testing", path) else []


def _finish(cfg: TrainConfig, trainer: Trainer, loaders: dict, bundle: DataBundle, data_config: dict,
            state: dict, init: dict | None, ood_backbone=None) -> None:
    """Best weights -> temperature on validation -> test metrics -> the model folder (main process writes).

    Everything is written into ``.export`` first and then renamed into place, which needs no disk space:
    a full disk or a kill while writing leaves the previous model folder as it was.
    """
    from safetensors.torch import load_model

    accelerator, out = trainer.accelerator, Path(cfg.output_dir)
    # Final evaluation in float32 with the best weights, so that any loader reproduces it.
    final = accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    load_model(final, str(out / "checkpoints" / "best.safetensors"))  # to CPU, then copied onto the device
    val_logits, val_labels = predict_logits(accelerator, final, loaders["val"], trainer.normalize)
    test_logits, test_labels = predict_logits(accelerator, final, loaders["test"], trainer.normalize)
    temperature = fit_temperature(val_logits, val_labels)
    logger.info("temperature %.4f (fitted on validation)", temperature)
    tumour = _tumour_metrics(cfg, trainer, final, bundle)
    extra = None
    if bundle.extra_held_out is not None:  # the third validation: held-out subjects of the other sources
        from .mixing import extra_metrics

        extra = extra_metrics(trainer, final, bundle, cfg)
    if not accelerator.is_main_process:
        return
    with staged(out) as stage:
        export = copy.deepcopy(final).float().cpu().to(memory_format=torch.contiguous_format)  # as safetensors saves
        fold_temperature(export, temperature)
        export_model(export, stage, data_config, init, license=weights_license({"other_sources": extra}))
        crash_point("export")
        metrics = {
            "temperature": temperature,
            "validation": classification_metrics(val_labels, softmax(val_logits, temperature)),
            "test": evaluate_logits(test_logits, test_labels, temperature, bundle.test_leak_free),
            **_run_facts(accelerator, bundle, state, init),
            **({"tumour_present": tumour} if tumour else {}),
            **({"other_sources": extra} if extra else {}),
        }
        detector, metrics["ood"] = fit_ood(final, bundle, data_config, backbone=ood_backbone,
                                           augment=from_preset(cfg.mri_augment))
        detector.save(stage)
        grid = _localisation(cfg, export, bundle, data_config, metrics, stage)
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=1))
        write_predictions(stage / "test_predictions.csv", bundle.test.names, test_labels,
                          softmax(test_logits, temperature), bundle.test_leak_free)
        figures = write_figures(stage, test_labels, test_logits, temperature, bundle.test_leak_free, state["history"]) + grid
        write_log(stage / "training_log.csv", state["history"])
        hardware = (f"{accelerator.num_processes} x {accelerator.device} ({platform.processor() or platform.machine()}, "
                    f"{os.cpu_count()} CPU threads), torch {torch.__version__}, mixed precision {accelerator.mixed_precision}")
        write_card(stage, card_context(cfg, metrics, figures, data_config, hardware, state["train_seconds"]))
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints" / "last", ignore_errors=True)
    logger.info("Model folder: %s", out)


def _tumour_metrics(cfg: TrainConfig, trainer: Trainer, final, bundle: DataBundle) -> dict | None:
    """How many held-out tumour-present slices (near-twins of none of the trained ones) the best weights call a
    tumour; None without ``--tumour-present``."""
    if bundle.tumour_train is None:
        return None
    held = trainer.accelerator.prepare(make_loader(bundle.tumour_held_out, cfg.batch_size, False, 0))
    logits, _ = predict_logits(trainer.accelerator, final, held, trainer.normalize)
    return {"folder": Path(cfg.tumour_present).name, "weight": cfg.tumour_present_weight,
            "per_batch": cfg.tumour_present_batch, "train": len(bundle.tumour_train),
            "held_out": len(bundle.tumour_held_out), "held_out_called_tumour": called_tumour(logits)}


def _ood_backbone(cfg: TrainConfig):
    """The frozen ImageNet stage of ``--ood-imagenet``, else None: the detector scores the head's input
    (before the temperature is folded in)."""
    from ..serving.ood import ImageNetStage

    return ImageNetStage.from_spec(cfg.ood_imagenet) if cfg.ood_imagenet else None


def _run_facts(accelerator, bundle: DataBundle, state: dict, init: dict | None) -> dict:
    """What ``metrics.json`` says of the data and the run besides the metrics."""
    return {
        "duplicates": bundle.report.as_dict(),
        "skipped_files": [n for n, _ in bundle.skipped],
        "split_sizes": {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
                        "test_leak_free": int(bundle.test_leak_free.sum())},
        "training": {"seconds": round(state["train_seconds"], 1), "epochs_run": len(state["history"]),
                     "best_epoch": state["best_epoch"], "pretrained": init is not None, "initialisation": init,
                     "mixed_precision": str(accelerator.mixed_precision)},
    }

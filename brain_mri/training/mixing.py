"""Other-source slices in a run: loaded through ``datasets`` like the Kaggle set, split by subject, weighted so
that every source, contrast and plane has its share, drawn beside the Kaggle slices each epoch, and reported on
their held-out subjects. Training code: serving never imports it.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import CLASS_NAMES, non_commercial
from .data import DecodedSplit, decode_split
from ..evaluation.localise import box_in_view
from .sources import SliceRules, cut_sources, source_facts

logger = logging.getLogger(__name__)
NO_TUMOUR = CLASS_NAMES.index("notumor")


@dataclass
class ExtraSlices:
    """Decoded other-source slices with what each one is: source, subject, group (source / truth / contrast /
    plane) and tumour box in the model's view (NaN where none)."""

    split: DecodedSplit
    source: np.ndarray
    subject: np.ndarray
    group: np.ndarray
    boxes: np.ndarray

    def __len__(self):
        return len(self.split)

    def subset(self, idx) -> "ExtraSlices":
        return ExtraSlices(self.split.subset(idx), self.source[idx], self.subject[idx], self.group[idx],
                           self.boxes[idx])


def load_extra(folders, rules: SliceRules, data_config: dict, exclude: tuple = (), progress: bool = True):
    """Every slice of ``folders`` (each with a ``manifest.csv``) decoded into the model's view, and skipped files.

    Raises:
        SourceError: a manifest or file cannot be used. DataError: no readable slice.
    """
    import datasets

    rows = [r for folder in folders for r in cut_sources(folder, rules, exclude)]
    files = [r["file"] for r in rows]
    raw = datasets.load_dataset("imagefolder", data_files={"train": files}, drop_labels=True)["train"]
    raw = raw.cast_column("image", datasets.Image(decode=False))
    raw = raw.add_column("label", [CLASS_NAMES.index(r["label"]) for r in rows])
    split, skipped = decode_split(raw, data_config, "other sources", progress)
    by_name = {f"{r['label']}/{r['file'].rsplit('/', 1)[-1]}": r for r in rows}
    if len(by_name) < len(rows):
        from .data import DataError

        raise DataError("--extra-sources: two slices share a file name and class; rename one of them.")
    kept = [by_name[n] for n in split.names]  # decode_split drops the unreadable, in order
    size = data_config["input_size"][-1]
    boxes = np.full((len(kept), 4), np.nan, dtype=np.float32)
    for i, r in enumerate(kept):
        if r["x0"] != "":
            box = [float(r[k]) for k in ("x0", "y0", "x1", "y1")]
            boxes[i] = box_in_view((*box, 0, 0), split.regions[i], size)
    return ExtraSlices(split, np.array([r["source"] for r in kept]), _subjects(kept, split),
                       np.array(["/".join((r["source"], r["label"], r["contrast"], r["plane"] or "2-D"))
                                 for r in kept]), boxes), skipped


def _subjects(rows: list, split: DecodedSplit) -> np.ndarray:
    """Each slice's subject; a slice the manifest names none for is grouped with its near-copies (re-encoded or
    resized, :func:`~brain_mri.training.dedup.duplicate_groups`), so that no copy straddles the held-out split."""
    from .dedup import duplicate_groups

    out = np.array([r["subject"] for r in rows], dtype=object)
    none = np.nonzero(out == "")[0]
    if len(none):
        _, near = duplicate_groups([split.md5[i] for i in none], split.thumbs[none])
        out[none] = [f"{rows[i]['source']}/near-{g}" for i, g in zip(none, near)]
    return out.astype(str)


def split_subjects(extra: ExtraSlices, held_out: float, seed: int) -> tuple[ExtraSlices, ExtraSlices]:
    """``(train, held out)``: about ``held_out`` of each source's subjects held out whole, at least one
    subject per source with two or more."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(extra), dtype=bool)
    for source in np.unique(extra.source):
        subjects = np.unique(extra.subject[extra.source == source])
        if len(subjects) < 2:
            continue
        chosen = rng.choice(subjects, max(1, round(held_out * len(subjects))), replace=False)
        out |= (extra.source == source) & np.isin(extra.subject, chosen)
    return extra.subset(np.nonzero(~out)[0]), extra.subset(np.nonzero(out)[0])


def balance_weights(group: np.ndarray, source_weights: dict | None = None) -> tuple[np.ndarray, dict]:
    """Sampling weights that give each source an equal share, each of its groups (truth / contrast / plane) an equal
    share of that, and each slice an equal share of its group. ``source_weights`` change the split: a key ``SOURCE``
    weighs a source against the others; a key ``SOURCE/TRUTH...`` (a group prefix) weighs the groups it names
    against the source's other groups.

    Returns:
        Per-slice weights summing to 1, and each group's share.
    """
    given = source_weights or {}
    source = np.array([g.split("/")[0] for g in group])
    sources = sorted(set(source))
    wanted = {s: given.get(s, 1.0) for s in sources}
    total = sum(wanted.values())
    counts, shares = Counter(group), {}
    for s in sources:
        groups = sorted({g for g in counts if g.split("/")[0] == s})
        within = {g: np.prod([w for k, w in given.items() if "/" in k and (g + "/").startswith(k + "/")])
                  for g in groups}
        shares.update({g: wanted[s] / total * within[g] / sum(within.values()) for g in groups})
    weights = np.array([shares[g] / counts[g] for g in group])
    return weights / weights.sum(), {g: round(float(v), 4) for g, v in shares.items()}


def add_extra(bundle, cfg, data_config: dict, progress: bool = True) -> None:
    """Loads ``cfg.extra_sources`` into a :class:`~brain_mri.training.data.DataBundle`: training and held-out subjects,
    the training slices' weights and each group's share."""
    rules = SliceRules(cfg.extra_stride, cfg.extra_min_head, cfg.extra_tumour_share, cfg.extra_margin)
    extra, skipped = load_extra(cfg.extra_sources, rules, data_config, tuple(cfg.extra_exclude), progress)
    bundle.extra_train, bundle.extra_held_out = split_subjects(extra, cfg.extra_held_out, cfg.seed)
    bundle.extra_weights, bundle.extra_shares = balance_weights(bundle.extra_train.group, cfg.source_weights())
    bundle.skipped += skipped
    logger.info("other-source slices: train %d (%d subjects), held out %d (%d subjects); %s",
                len(bundle.extra_train), len(set(bundle.extra_train.subject)), len(bundle.extra_held_out),
                len(set(bundle.extra_held_out.subject)), dict(Counter(map(str, bundle.extra_train.group))))


class MixedSampler(torch.utils.data.Sampler):
    """Each epoch: every Kaggle index (the first ``n_kaggle``) once, plus other-source indices drawn with
    ``weights`` to make ``share`` of the epoch, shuffled together; seeded by (seed, epoch), so every process and a
    resumed run draw the same order."""

    def __init__(self, n_kaggle: int, weights: np.ndarray, share: float, seed: int):
        self.n_kaggle, self.weights, self.seed, self.epoch = n_kaggle, torch.as_tensor(weights), seed, 0
        self.n_extra = round(n_kaggle * share / (1 - share)) if len(weights) else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.n_kaggle + self.n_extra

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch + 11)
        extra = self.n_kaggle + torch.multinomial(self.weights, self.n_extra, True, generator=g) if self.n_extra \
            else torch.zeros(0, dtype=torch.long)
        order = torch.cat([torch.arange(self.n_kaggle), extra])
        return iter(order[torch.randperm(len(order), generator=g)].tolist())


def join(train: DecodedSplit, extra: ExtraSlices) -> DecodedSplit:
    """The Kaggle training split followed by the other-source training slices (the sampler's index order)."""
    parts = (train, extra.split)
    return DecodedSplit(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                        train.names + [f"extra/{n}" for n in extra.split.names], train.md5 + extra.split.md5,
                        np.concatenate([p.thumbs for p in parts]), np.concatenate([p.regions for p in parts]))


def held_out_metrics(logits: np.ndarray, extra: ExtraSlices) -> dict:
    """On held-out subjects: slices right as tumour / no tumour, tumour slices called a tumour, "no tumour" kept;
    all together and per source."""
    def rates(mask):
        called = logits[mask].argmax(1) != NO_TUMOUR
        tumour = extra.split.labels[mask] != NO_TUMOUR
        return {"slices": int(mask.sum()), "subjects": len(set(extra.subject[mask])),
                "accuracy": float((called == tumour).mean()) if mask.any() else None,
                "tumour_called": float(called[tumour].mean()) if tumour.any() else None,
                "notumor_kept": float((~called[~tumour]).mean()) if (~tumour).any() else None}

    if not len(extra):
        return {}
    every = np.ones(len(extra), dtype=bool)
    return {"all": rates(every), **{s: rates(extra.source == s) for s in sorted(set(extra.source))}}


def extra_metrics(trainer, model, bundle, cfg) -> dict:
    """The third validation: :func:`held_out_metrics` of ``model`` on the held-out subjects, with the sources'
    licences, sizes and shares of the draw."""
    from .data import make_loader
    from ..evaluation.evaluate import predict_logits

    train, held = bundle.extra_train, bundle.extra_held_out
    logits = np.zeros((0, len(CLASS_NAMES)))
    if len(held):
        loader = trainer.accelerator.prepare(make_loader(held.split, cfg.batch_size, False, 0))
        logits, _ = predict_logits(trainer.accelerator, model, loader, trainer.normalize)
    sources = {}
    for s, facts in source_facts(cfg.extra_sources, tuple(cfg.extra_exclude)).items():
        sizes = {f"{name}_{what}": n for name, part in (("train", train), ("held_out", held))
                 for what, n in (("slices", int((part.source == s).sum())),
                                 ("subjects", len(set(part.subject[part.source == s]))))}
        sources[s] = {**facts, **sizes}
    return {"folders": [Path(f).name for f in cfg.extra_sources], "share": cfg.extra_share,
            "excluded": list(cfg.extra_exclude),
            "rules": {k: getattr(cfg, f"extra_{k}") for k in ("stride", "min_head", "tumour_share", "margin")},
            "train": len(train), "held_out": len(held), "sources": sources,
            "non_commercial": any(non_commercial(f["licence"]) for f in sources.values()),
            "group_shares": bundle.extra_shares, "held_out_metrics": held_out_metrics(logits, held)}

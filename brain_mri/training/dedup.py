"""Duplicates: thumbnails, exact and near-copy groups, and the audit of a split against them."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..config import NEAR_DUP_THRESHOLD, THUMB_SIZE


def thumbnail(image: Image.Image) -> np.ndarray:
    """The near-duplicate signature: a 16x16 grayscale box-filtered thumbnail."""
    return np.asarray(
        image.convert("L").resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX), dtype=np.float32
    ).ravel()


def duplicate_groups(md5: list, thumbs: np.ndarray, threshold: float = NEAR_DUP_THRESHOLD):
    """Groups images that are exact (same bytes) or near (thumbnail distance) copies.

    Returns:
        Two int arrays of group ids, ``exact`` and ``near`` (near groups include exact ones);
        images with the same id are copies of each other. Ids grow with the first image of
        each group, so the group order is the image order.
    """
    import torch
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(md5)
    first = {}
    same_bytes = np.array([first.setdefault(h, i) for i, h in enumerate(md5)], dtype=np.int64)
    exact_edges = (np.arange(n), same_bytes)
    t = torch.from_numpy(np.ascontiguousarray(thumbs, dtype=np.float32))
    rows, cols = [], []
    for start in range(0, n, 1024):  # n x n distances in blocks of rows
        d = torch.cdist(t[start:start + 1024], t, p=1) / t.shape[1]
        r, c = torch.nonzero(d <= threshold, as_tuple=True)
        rows.append((r + start).numpy())
        cols.append(c.numpy())
    near_edges = (np.concatenate([exact_edges[0], *rows]), np.concatenate([exact_edges[1], *cols]))

    def components(edges):
        graph = coo_matrix((np.ones(len(edges[0]), bool), edges), shape=(n, n))
        return connected_components(graph, directed=False)[1]

    return components(exact_edges), components(near_edges)


@dataclass
class DedupReport:
    """Duplicate counts within and across splits.

    ``within[kind][split]``: extra copies inside a split (images minus groups).
    ``across[kind]["a-b"]``: images of split b that have a copy in split a.
    """

    within: dict = field(default_factory=dict)
    across: dict = field(default_factory=dict)
    dropped_train: int = 0
    leak_free_test: int = 0
    test_total: int = 0
    threshold: float = NEAR_DUP_THRESHOLD

    def as_dict(self):
        return {
            "within": self.within, "across": self.across, "dropped_train": self.dropped_train,
            "leak_free_test": self.leak_free_test, "test_total": self.test_total,
            "near_threshold": self.threshold,
        }

    def lines(self):
        out = []
        for kind in ("exact", "near"):
            w = ", ".join(f"{s} {v}" for s, v in self.within[kind].items())
            a = ", ".join(f"{p} {v}" for p, v in self.across[kind].items())
            out.append(f"{kind} duplicates - extra copies within: {w}; images with a copy across: {a}")
        out.append(f"training images dropped (copies of validation/test images): {self.dropped_train}")
        out.append(f"leak-free test images (no copy in Training): {self.leak_free_test} of {self.test_total}")
        return out


def audit(groups: dict, splits: dict) -> tuple[dict, dict]:
    """Counts duplicates within and across splits.

    Args:
        groups: ``{"exact": ids, "near": ids}`` over all images.
        splits: ``{split_name: bool mask}`` over the same images.
    """
    within, across = {}, {}
    names = list(splits)
    for kind, ids in groups.items():
        within[kind] = {s: int(m.sum() - len(np.unique(ids[m]))) for s, m in splits.items()}
        across[kind] = {}
        for a_i, a in enumerate(names):
            for b in names[a_i + 1:]:
                in_a = set(ids[splits[a]].tolist())
                across[kind][f"{a}-{b}"] = int(sum(g in in_a for g in ids[splits[b]].tolist()))
    return within, across


def audit_split(groups: dict, is_val: np.ndarray | None, n_test: int, drop_leaks: bool = True):
    """Audits a Training / validation / test split of images grouped by :func:`duplicate_groups`.

    Args:
        groups: ``{"exact": ids, "near": ids}`` over the Training images, then the test images.
        is_val: bool mask of the validation images among the Training ones, or None (no validation).
        n_test: how many test images close ``groups``.
        drop_leaks: leave out training images that copy a validation or test image.

    Returns:
        ``(report, keep, leak_free)``: the :class:`DedupReport`, the indices of the Training images
        that train, and a bool mask of the test images with no copy anywhere in Training.
    """
    near = groups["near"]
    n_tr = len(near) - n_test
    val = np.zeros(n_tr, bool) if is_val is None else is_val
    none_test = np.zeros(n_test, bool)
    masks = {"train": np.r_[~val, none_test], "val": np.r_[val, none_test],
             "test": np.r_[np.zeros(n_tr, bool), ~none_test]}
    if is_val is None:
        masks.pop("val")
    within, across = audit(groups, masks)

    held_out = set(near[n_tr:].tolist()) | set(near[:n_tr][val].tolist())
    train_idx = np.nonzero(~val)[0]
    leaky = np.array([near[i] in held_out for i in train_idx], dtype=bool)
    training_groups = set(near[:n_tr].tolist())
    leak_free = np.array([g not in training_groups for g in near[n_tr:]], dtype=bool)
    report = DedupReport(
        within=within, across=across, dropped_train=int(leaky.sum()) if drop_leaks else 0,
        leak_free_test=int(leak_free.sum()), test_total=n_test,
    )
    return report, train_idx[~leaky] if drop_leaks else train_idx, leak_free

"""Cluster-based foreground extraction, CBFE (spec §7).

The authors upsample the k=200 token clusters and the DINO attention masks from 28×28 to 100×100
(torch legacy nearest) and compute everything there. Both maps are constant on the same nearest
blocks, so every 100×100 pixel count equals a token count weighted by its block size
``block_weights[r, c] = block_counts(h, 100)[r] · block_counts(w, 100)[c]``
(:func:`leopart.cluster.kmeans.eval_block_weights`). This module therefore works at token
resolution with those weights and gives the authors' numbers exactly; only the threshold search
needs the ground truth at 100×100 (per image and cluster: GT-foreground pixels of the upsampled
cluster map, gathered image-chunk by image-chunk).

Deviations / choices (documented, see also spec §11–12):

* Clusters are sorted by precision with a *stable* sort (the authors use numpy's default
  quicksort, whose order on ties is arbitrary).
* Clusters absent from a split (the authors assert that none are) get precision NaN there, are
  logged as a warning and treated as background in that split; in the train sort they come first
  (lowest), so they can never be foreground.
* The rounded threshold is the value of ``np.arange(0, 1, round_step)`` itself (e.g.
  ``0.6000000000000001``), exactly as the authors compare against it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leopart.cluster.kmeans import eval_block_weights
from leopart.errors import LeopartError
from leopart.metrics import _nanmean_rows
from leopart.resample import upsample_labels

__all__ = [
    "CBFEResult",
    "ThresholdResult",
    "cbfe",
    "cluster_precision",
    "eval_block_weights",
    "foreground_clusters",
    "foreground_mask",
    "precision_order",
    "round_threshold",
    "threshold_search",
]

log = logging.getLogger(__name__)

#: Pixels at evaluation resolution processed per image chunk in the threshold search.
CHUNK_PIXELS = 1 << 22


@dataclass(frozen=True)
class ThresholdResult:
    """Outcome of :func:`threshold_search`.

    Attributes:
        threshold: rounded threshold (a value of ``np.arange(0, 1, round_step)``).
        raw_threshold: train precision of the cluster at rank ``best_cut``.
        best_cut: the best cut start (clusters with rank ``>= best_cut`` are foreground).
        cuts: ``(n_cuts,)`` int64 cut starts tried, ``range(int(lo·k), int(hi·k))``.
        scores: ``(n_cuts,)`` float64 mean per-image foreground IoU of each cut (255 counts as fg).
        order: ``(k,)`` int64 cluster ids sorted by train precision ascending (absent first).
    """

    threshold: float
    raw_threshold: float
    best_cut: int
    cuts: np.ndarray
    scores: np.ndarray
    order: np.ndarray


@dataclass(frozen=True)
class CBFEResult:
    """Outcome of :func:`cbfe`.

    Attributes:
        fg_train: ``(N_train, h, w)`` bool foreground mask at token resolution.
        fg_val: ``(N_val, h, w)`` bool foreground mask at token resolution.
        table: one row per cluster: ``cluster, prec_train, prec_val, images_train, images_val,
            tokens_train, tokens_val, rank_train, fg_train, fg_val``.
        threshold: the threshold applied to both splits.
        search: the threshold search (:class:`ThresholdResult`, or
            :class:`leopart.label_free.OtsuResult` when label-free), or ``None`` when a fixed
            threshold was given.
    """

    fg_train: np.ndarray
    fg_val: np.ndarray
    table: pd.DataFrame
    threshold: float
    search: Any


def _check_labels(labels: np.ndarray, k: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise LeopartError(f"{what}: cluster labels must be (N, h, w), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise LeopartError(f"{what}: cluster labels must be integers, got {labels.dtype}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise LeopartError(
            f"{what}: cluster labels must lie in 0..{k - 1}, found {int(labels.min())}..{int(labels.max())}"
        )
    return labels


def _check_weights(block_weights: np.ndarray, grid: tuple[int, ...], what: str) -> np.ndarray:
    bw = np.asarray(block_weights)
    if bw.shape != tuple(grid) or bw.dtype.kind not in "iu" or (bw.size and bw.min() < 0):
        raise LeopartError(
            f"{what}: block weights must be a non-negative integer array of shape {tuple(grid)}, "
            f"got {bw.dtype} {bw.shape}"
        )
    return bw.astype(np.int64, copy=False)


def _image_cluster_sums(labels: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """``out[i, c] = Σ weights[i, r, s]`` over tokens of image ``i`` with label ``c`` → ``(N, k)`` float64."""
    n = labels.shape[0]
    key = labels.reshape(n, -1).astype(np.int64) + (np.arange(n, dtype=np.int64) * k)[:, None]
    return np.bincount(key.ravel(), weights=weights.reshape(-1), minlength=n * k).reshape(n, k)


def cluster_precision(
    labels: np.ndarray, attn_fg: np.ndarray, k: int, block_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster attention precision (spec §7.1 step 2), at evaluation resolution via weights.

    For each image ``i`` and cluster ``c`` present in it, ``prec_img = |c ∩ attn_fg| / |c|`` counted
    in pixels at evaluation resolution (= block-weighted token counts); the cluster's precision is
    the unweighted mean of ``prec_img`` over the images where it occurs.

    Args:
        labels: ``(N, h, w)`` int cluster ids in ``0..k-1``.
        attn_fg: ``(N, h, w)`` bool (or 0/1) attention foreground masks.
        k: number of clusters.
        block_weights: ``(h, w)`` int64 eval pixels per token.

    Returns:
        ``(prec, n_images)``: ``(k,)`` float64 precision (NaN for clusters absent from the split)
        and ``(k,)`` int64 number of images each cluster occurs in.
    """
    labels = _check_labels(labels, k, "cluster precision")
    attn = np.asarray(attn_fg)
    if attn.shape != labels.shape:
        raise LeopartError(f"cluster precision: attention masks {attn.shape} != cluster labels {labels.shape}")
    bw = _check_weights(block_weights, labels.shape[1:], "cluster precision")
    n = labels.shape[0]
    w_all = np.broadcast_to(bw, labels.shape).astype(np.float64)
    total = _image_cluster_sums(labels, k, w_all)
    fg = _image_cluster_sums(labels, k, w_all * (attn != 0))
    present = total > 0
    ratio = np.zeros((n, k), dtype=np.float64)
    np.divide(fg, total, out=ratio, where=present)
    n_images = present.sum(axis=0).astype(np.int64)
    prec = np.full(k, np.nan, dtype=np.float64)
    np.divide(ratio.sum(axis=0), n_images, out=prec, where=n_images > 0)
    return prec, n_images


def precision_order(prec: np.ndarray) -> np.ndarray:
    """Cluster ids sorted by precision ascending, stable; NaN (absent) clusters first. ``(k,)`` int64."""
    prec = np.asarray(prec, dtype=np.float64)
    return np.argsort(np.where(np.isnan(prec), -np.inf, prec), kind="stable").astype(np.int64)


def round_threshold(raw: float, round_step: float = 0.05) -> float:
    """Nearest value of ``np.arange(0, 1, round_step)`` to ``raw`` (first on ties), e.g. 0.62→0.6."""
    grid = np.arange(0, 1, round_step)
    return float(grid[int(np.argmin(np.abs(grid - raw)))])


def _cluster_gt_counts(labels: np.ndarray, gt_eval: np.ndarray, k: int) -> np.ndarray:
    """``I[i, c]`` = GT-foreground pixels (``gt != 0``) of cluster ``c`` in image ``i`` at eval res.

    Labels are upsampled (torch legacy nearest) one image chunk at a time. Returns ``(N, k)`` int64.
    """
    n, out_h, out_w = gt_eval.shape
    per_chunk = max(1, CHUNK_PIXELS // max(1, out_h * out_w))
    counts = np.zeros((n, k), dtype=np.int64)
    for a in range(0, n, per_chunk):
        b = min(n, a + per_chunk)
        up = upsample_labels(labels[a:b], (out_h, out_w)).astype(np.int64)
        up += (np.arange(b - a, dtype=np.int64) * k)[:, None, None]
        sel = up[np.asarray(gt_eval[a:b]) != 0]
        counts[a:b] = np.bincount(sel, minlength=(b - a) * k).reshape(b - a, k)
    return counts


def threshold_search(
    prec_train: np.ndarray,
    labels_train: np.ndarray,
    gt_train_eval: np.ndarray,
    k: int,
    block_weights: np.ndarray,
    eval_size: int = 100,
    cut_fractions: tuple[float, float] = (0.55, 0.75),
    round_step: float = 0.05,
) -> ThresholdResult:
    """Pick the precision threshold with train ground truth (spec §7.1 steps 3–4).

    Clusters are sorted by train precision (:func:`precision_order`); for every cut start in
    ``range(int(lo·k), int(hi·k))`` the foreground is the union of clusters with rank ``>= start``
    and the cut's score is the mean per-image foreground IoU against the train GT at evaluation
    resolution (255 counts as foreground; images with an empty union skipped, as
    :func:`leopart.metrics.per_image_fg_iou`). All cuts are scored at once from per-image,
    per-cluster pixel counts and suffix sums over the sorted order.

    Args:
        prec_train: ``(k,)`` train precisions (:func:`cluster_precision`).
        labels_train: ``(N, h, w)`` int train cluster labels.
        gt_train_eval: ``(N, H, W)`` uint8 train ground truth at evaluation resolution.
        k: number of clusters.
        block_weights: ``(h, w)`` int64 eval pixels per token (must match ``H, W``).
        eval_size: evaluation size ``H = W``.
        cut_fractions: ``(lo, hi)`` fractions of ``k`` bounding the cut starts.
        round_step: rounding grid step of the threshold.

    Returns:
        :class:`ThresholdResult` (best cut = first maximum of the scores).
    """
    labels = _check_labels(labels_train, k, "CBFE threshold search")
    prec = np.asarray(prec_train, dtype=np.float64)
    if prec.shape != (k,):
        raise LeopartError(f"CBFE threshold search: precisions have shape {prec.shape}, expected ({k},)")
    gt = gt_train_eval
    if gt.ndim != 3 or gt.shape[0] != labels.shape[0] or gt.shape[1:] != (eval_size, eval_size):
        raise LeopartError(
            f"CBFE threshold search: train ground truth has shape {gt.shape}, expected "
            f"({labels.shape[0]}, {eval_size}, {eval_size})"
        )
    bw = _check_weights(block_weights, labels.shape[1:], "CBFE threshold search")
    if not np.array_equal(bw, eval_block_weights(labels.shape[1:], eval_size)):
        raise LeopartError(
            f"CBFE threshold search: block weights do not match a {labels.shape[1:]} grid at eval size {eval_size}"
        )
    lo, hi = int(cut_fractions[0] * k), int(cut_fractions[1] * k)
    cuts = np.arange(lo, hi, dtype=np.int64)
    if cuts.size == 0:
        raise LeopartError(f"cbfe.cut_fractions={tuple(cut_fractions)} leaves no cut for k={k}")

    n = labels.shape[0]
    pix = _image_cluster_sums(labels, k, np.broadcast_to(bw, labels.shape).astype(np.float64))
    inter_c = _cluster_gt_counts(labels, gt, k)
    gt_fg = np.count_nonzero(np.asarray(gt) != 0, axis=(1, 2)).astype(np.int64)

    order = precision_order(prec)
    # suffix sums over the sorted order: column s = Σ over clusters with rank >= s
    suf_pix = np.cumsum(pix[:, order][:, ::-1], axis=1)[:, ::-1].astype(np.int64)
    suf_int = np.cumsum(inter_c[:, order][:, ::-1], axis=1)[:, ::-1]
    inter = suf_int[:, cuts].T  # (n_cuts, N)
    pred = suf_pix[:, cuts].T
    union = gt_fg[None, :] + pred - inter
    scores = _nanmean_rows(inter, union)
    best_i = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))
    best_cut = int(cuts[best_i])
    raw = float(prec[order[best_cut]])
    if np.isnan(raw):
        raise LeopartError(
            f"CBFE threshold search: the best cut {best_cut} falls on a cluster absent from train "
            f"({int(np.isnan(prec).sum())} of {k} clusters absent)"
        )
    thr = round_threshold(raw, round_step)
    log.info(
        "CBFE threshold search over %d train images: best cut %d (score %.4f), raw threshold %.4f -> %.2f",
        n, best_cut, scores[best_i], raw, thr,
    )
    return ThresholdResult(
        threshold=thr, raw_threshold=raw, best_cut=best_cut, cuts=cuts, scores=scores, order=order
    )


def foreground_clusters(prec: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground cluster flags ``prec >= threshold`` (NaN → False). ``(k,)`` bool."""
    prec = np.asarray(prec, dtype=np.float64)
    return ~np.isnan(prec) & (np.nan_to_num(prec, nan=-np.inf) >= threshold)


def foreground_mask(labels: np.ndarray, fg_clusters: np.ndarray) -> np.ndarray:
    """Foreground mask by lookup: ``fg_clusters[labels]``.

    Args:
        labels: ``(N, h, w)`` int cluster ids in ``0..k-1``.
        fg_clusters: ``(k,)`` bool.

    Returns:
        ``(N, h, w)`` bool.
    """
    fg_clusters = np.asarray(fg_clusters, dtype=bool)
    labels = _check_labels(labels, fg_clusters.shape[0], "foreground mask")
    return fg_clusters[labels]


def _warn_absent(n_images: np.ndarray, split: str) -> None:
    absent = np.flatnonzero(n_images == 0)
    if absent.size:
        log.warning(
            "CBFE: %d of %d clusters do not occur in %s (treated as background there): %s",
            absent.size, n_images.size, split, absent.tolist(),
        )


def cbfe(
    labels_train: np.ndarray,
    labels_val: np.ndarray,
    attn_train: np.ndarray,
    attn_val: np.ndarray,
    gt_train_eval: np.ndarray | None,
    k: int,
    block_weights: np.ndarray,
    eval_size: int = 100,
    threshold: float | None = None,
    cut_fractions: tuple[float, float] = (0.55, 0.75),
    round_step: float = 0.05,
    label_free: bool = False,
) -> CBFEResult:
    """Full CBFE (spec §7.1): precision on train → threshold → fg clusters per split.

    1. Train precision against the train attention masks; 2. threshold by
    :func:`threshold_search` with the train GT (or the fixed ``threshold``); 3. train fg clusters =
    train precision ``>= threshold``; 4. val precision recomputed on val against the val attention
    masks, val fg clusters = val precision ``>= threshold`` (only the threshold transfers).

    Args:
        labels_train: ``(N_train, h, w)`` int k-means labels (k clusters, joint train+val run).
        labels_val: ``(N_val, h, w)`` int labels of the same clustering.
        attn_train: ``(N_train, h, w)`` attention foreground masks (bool or 0/1).
        attn_val: ``(N_val, h, w)`` attention foreground masks.
        gt_train_eval: ``(N_train, eval_size, eval_size)`` uint8 train GT; may be ``None`` when a
            fixed ``threshold`` is given.
        k: number of clusters.
        block_weights: ``(h, w)`` int64 eval pixels per token.
        eval_size: evaluation size.
        threshold: fixed threshold (config), or ``None`` to search it.
        cut_fractions: see :func:`threshold_search`.
        round_step: see :func:`threshold_search`.
        label_free: choose the threshold without ground truth, by Otsu's criterion on the train
            precisions within ``cut_fractions`` (:func:`leopart.label_free.otsu_threshold`);
            ``gt_train_eval`` is not read.

    Returns:
        :class:`CBFEResult` with token-resolution masks for both splits and the per-cluster table.
    """
    labels_train = _check_labels(labels_train, k, "CBFE train")
    labels_val = _check_labels(labels_val, k, "CBFE val")
    prec_tr, img_tr = cluster_precision(labels_train, attn_train, k, block_weights)
    prec_va, img_va = cluster_precision(labels_val, attn_val, k, block_weights)
    _warn_absent(img_tr, "train")
    _warn_absent(img_va, "val")

    search: Any = None
    if threshold is None and label_free:
        from leopart.label_free import otsu_threshold

        search = otsu_threshold(prec_tr, cut_fractions)
        thr, order = search.threshold, search.order
        log.info("CBFE label-free threshold (Otsu): cut %d, threshold %.4f", search.best_cut, thr)
    elif threshold is None:
        if gt_train_eval is None:
            raise LeopartError("cbfe.threshold: no fixed threshold given and no train ground truth to search it")
        search = threshold_search(
            prec_tr, labels_train, gt_train_eval, k, block_weights, eval_size, cut_fractions, round_step
        )
        thr = search.threshold
        order = search.order
    else:
        thr = float(threshold)
        if not np.isfinite(thr):
            raise LeopartError(f"cbfe.threshold={threshold} must be a finite number")
        order = precision_order(prec_tr)

    fg_cl_tr = foreground_clusters(prec_tr, thr)
    fg_cl_va = foreground_clusters(prec_va, thr)
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k, dtype=np.int64)
    table = pd.DataFrame(
        {
            "cluster": np.arange(k, dtype=np.int64),
            "prec_train": prec_tr,
            "prec_val": prec_va,
            "images_train": img_tr,
            "images_val": img_va,
            "tokens_train": np.bincount(labels_train.reshape(-1), minlength=k).astype(np.int64),
            "tokens_val": np.bincount(labels_val.reshape(-1), minlength=k).astype(np.int64),
            "rank_train": rank,
            "fg_train": fg_cl_tr,
            "fg_val": fg_cl_va,
        }
    )
    log.info(
        "CBFE threshold %.2f: %d train / %d val foreground clusters of %d",
        thr, int(fg_cl_tr.sum()), int(fg_cl_va.sum()), k,
    )
    return CBFEResult(
        fg_train=foreground_mask(labels_train, fg_cl_tr),
        fg_val=foreground_mask(labels_val, fg_cl_va),
        table=table,
        threshold=thr,
        search=search,
    )

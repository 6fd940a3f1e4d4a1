"""Tests for leopart.cbfe (spec §7)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from leopart.cbfe import (
    cbfe,
    cluster_precision,
    eval_block_weights,
    foreground_clusters,
    foreground_mask,
    precision_order,
    round_threshold,
    threshold_search,
)
from leopart.errors import LeopartError
from leopart.metrics import per_image_fg_iou
from leopart.resample import nearest_indices, upsample_labels


def test_precision_hand_example() -> None:
    labels = np.array([[[0, 0], [1, 2]], [[0, 1], [1, 1]]])
    attn = np.array([[[1, 0], [1, 1]], [[0, 0], [1, 0]]], dtype=bool)
    # image 0: c0 1/2, c1 1/1, c2 1/1; image 1: c0 0/1, c1 1/3, c2 absent; c3 absent everywhere
    prec, n_img = cluster_precision(labels, attn, 4, np.ones((2, 2), np.int64))
    np.testing.assert_allclose(prec[:3], [(0.5 + 0) / 2, (1 + 1 / 3) / 2, 1.0])
    assert np.isnan(prec[3])
    np.testing.assert_array_equal(n_img, [2, 2, 1, 0])


def _brute_precision(labels, attn, k, size):
    up_l, up_a = upsample_labels(labels, size), upsample_labels(attn, size)
    prec = np.full(k, np.nan)
    for c in range(k):
        vals = [up_a[i][up_l[i] == c].mean() for i in range(len(labels)) if (up_l[i] == c).any()]
        if vals:
            prec[c] = np.mean(vals)
    return prec


def test_precision_block_weights_vs_brute_force() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(4, 7, 7))
    attn = rng.random((4, 7, 7)) < 0.4
    prec, n_img = cluster_precision(labels, attn, 7, eval_block_weights((7, 7), 25))
    np.testing.assert_allclose(prec, _brute_precision(labels, attn, 7, 25), rtol=1e-12)
    assert n_img[6] == 0 and np.isnan(prec[6])
    # block weights matter: the unweighted token precision differs
    unweighted, _ = cluster_precision(labels, attn, 7, np.ones((7, 7), np.int64))
    assert not np.allclose(unweighted[:6], prec[:6])


def test_threshold_rounding() -> None:
    assert round_threshold(0.62) == pytest.approx(0.6)
    assert round_threshold(0.63) == pytest.approx(0.65)
    assert round_threshold(0.97) == pytest.approx(0.95)
    assert round_threshold(0.01) == 0.0
    assert round_threshold(0.62) in np.arange(0, 1, 0.05)  # the grid value itself


def _brute_search(prec, labels, gt, k, size, lo=0.55, hi=0.75):
    order = np.argsort(np.where(np.isnan(prec), -np.inf, prec), kind="stable")
    up = upsample_labels(labels, size)
    scores = []
    for start in range(int(lo * k), int(hi * k)):
        scores.append(per_image_fg_iou(gt, np.isin(up, order[start:])))
    scores = np.array(scores)
    best = int(np.argmax(scores))
    return order, scores, int(lo * k) + best, prec[order[int(lo * k) + best]]


@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_search_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, n, g, size = 20, 6, 5, 12
    labels = rng.integers(0, k, size=(n, g, g))
    gt = rng.choice(np.array([0, 0, 1, 2, 255], np.uint8), size=(n, size, size))
    gt[0] = 0  # an image without GT foreground
    prec = rng.random(k)
    prec[[3, 7]] = prec[5]  # ties: stable order
    res = threshold_search(prec, labels, gt, k, eval_block_weights((g, g), size), eval_size=size)
    order, scores, best, raw = _brute_search(prec, labels, gt, k, size)
    np.testing.assert_array_equal(res.order, order)
    np.testing.assert_array_equal(res.cuts, np.arange(11, 15))
    np.testing.assert_allclose(res.scores, scores, rtol=1e-12)
    assert res.best_cut == best and res.raw_threshold == raw
    assert res.threshold == round_threshold(raw)


def test_threshold_search_real_voc_gt(voc_masks_dir) -> None:
    """28x28 labels, k=200, real PVOC GT at 100x100 (255 boundaries count as fg)."""
    paths = sorted((voc_masks_dir / "SegmentationClass").glob("*.png"))[:8]
    gts = []
    for p in paths:
        m = np.array(Image.open(p))
        gts.append(m[nearest_indices(m.shape[0], 100)[:, None], nearest_indices(m.shape[1], 100)[None, :]])
    gt = np.stack(gts).astype(np.uint8)
    rng = np.random.default_rng(3)
    k = 200
    coarse = rng.integers(0, k, size=(8, 7, 7))
    labels = coarse.repeat(4, axis=1).repeat(4, axis=2)  # blobby 28x28 label maps
    prec = rng.random(k)
    res = threshold_search(prec, labels, gt, k, eval_block_weights((28, 28), 100))
    order, scores, best, raw = _brute_search(prec, labels, gt, k, 100)
    np.testing.assert_allclose(res.scores, scores, rtol=1e-12)
    assert res.best_cut == best and res.raw_threshold == raw
    assert res.cuts[0] == 110 and res.cuts[-1] == 149


def test_threshold_search_errors() -> None:
    labels = np.zeros((2, 5, 5), np.int64)
    gt = np.zeros((2, 12, 12), np.uint8)
    with pytest.raises(LeopartError, match="block weights"):
        threshold_search(np.ones(20), labels, gt, 20, np.ones((5, 5), np.int64), eval_size=12)
    with pytest.raises(LeopartError, match="ground truth has shape"):
        threshold_search(np.ones(20), labels, gt, 20, eval_block_weights((5, 5), 12), eval_size=100)
    with pytest.raises(LeopartError, match="no cut"):
        threshold_search(np.ones(2), labels, gt, 2, eval_block_weights((5, 5), 12), eval_size=12)


def test_nan_handling() -> None:
    prec = np.array([0.5, np.nan, 0.2, 0.9, np.nan])
    np.testing.assert_array_equal(precision_order(prec), [1, 4, 2, 0, 3])
    np.testing.assert_array_equal(foreground_clusters(prec, 0.5), [True, False, False, True, False])
    labels = np.array([[[0, 1], [3, 4]]])
    np.testing.assert_array_equal(
        foreground_mask(labels, foreground_clusters(prec, 0.5)), [[[True, False], [True, False]]]
    )
    with pytest.raises(LeopartError, match="0..4"):
        foreground_mask(np.array([[[5]]]), np.zeros(5, bool))


def _synthetic(rng, n, k, g=7):
    labels = rng.integers(0, k, size=(n, g, g))
    fg_true = labels >= k // 2  # upper half of the clusters are objects
    attn = fg_true | (rng.random(labels.shape) < 0.1)  # noisy attention on the background
    return labels, attn, fg_true


def test_cbfe_end_to_end(caplog) -> None:
    rng = np.random.default_rng(5)
    k, size = 10, 25
    bw = eval_block_weights((7, 7), size)
    lt, at, ft = _synthetic(rng, 12, k)
    lv, av, fv = _synthetic(rng, 9, k)
    gt = upsample_labels(ft.astype(np.uint8) * 7, size)  # class 7 where the object clusters are
    res = cbfe(lt, lv, at, av, gt, k, bw, eval_size=size)
    np.testing.assert_array_equal(res.fg_train, ft)
    np.testing.assert_array_equal(res.fg_val, fv)
    assert res.search is not None and res.search.best_cut == 5
    assert res.threshold == round_threshold(res.search.raw_threshold)
    assert list(res.table.columns) == [
        "cluster", "prec_train", "prec_val", "images_train", "images_val",
        "tokens_train", "tokens_val", "rank_train", "fg_train", "fg_val",
    ]
    np.testing.assert_array_equal(res.table["fg_train"], np.arange(k) >= 5)
    assert res.table["tokens_train"].sum() == lt.size and res.table["tokens_val"].sum() == lv.size
    assert sorted(res.table["rank_train"]) == list(range(k))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    fixed = cbfe(lt, lv, at, av, None, k, bw, eval_size=size, threshold=res.threshold)
    assert fixed.search is None
    np.testing.assert_array_equal(fixed.fg_val, res.fg_val)


def test_cbfe_cluster_absent_from_val(caplog) -> None:
    rng = np.random.default_rng(6)
    k, size = 10, 25
    bw = eval_block_weights((7, 7), size)
    lt, at, ft = _synthetic(rng, 12, k)
    lv, av, _ = _synthetic(rng, 9, k)
    lv[lv == 8] = 9  # fg cluster 8 absent from val
    lv[lv == 2] = 1  # bg cluster 2 absent from val
    gt = upsample_labels(ft.astype(np.uint8), size)
    with caplog.at_level(logging.WARNING, logger="leopart.cbfe"):
        res = cbfe(lt, lv, at, av, gt, k, bw, eval_size=size)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "2 of 10 clusters" in msgs[0] and "val" in msgs[0] and "[2, 8]" in msgs[0]
    row = res.table.set_index("cluster").loc[8]
    assert np.isnan(row["prec_val"]) and row["images_val"] == 0 and not row["fg_val"] and row["fg_train"]
    np.testing.assert_array_equal(res.fg_val, lv >= 5)

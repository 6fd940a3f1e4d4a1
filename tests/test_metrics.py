"""Tests for leopart.metrics (spec §6)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.optimize import linear_sum_assignment

from leopart.errors import LeopartError
from leopart.metrics import (
    confusion,
    confusion_matrix,
    hungarian_miou,
    many_to_one_miou,
    miou_from_mapping,
    per_image_fg_iou,
)

# --------------------------------------------------------------------------- hand-computed 3x3

GT_3x3 = np.array([[0, 0, 1], [1, 2, 2], [2, 255, 0]], dtype=np.uint8)
PRED_3x3 = np.array([[1, 1, 0], [0, 2, 2], [2, 2, 0]], dtype=np.int32)


def test_confusion_hand_example() -> None:
    # (gt, pred) pairs: (0,1) (0,1) (1,0) (1,0) (2,2) (2,2) (2,2) [255 dropped] (0,0)
    expected = np.array([[1, 2, 0], [2, 0, 0], [0, 0, 3]])
    conf = confusion_matrix(GT_3x3, PRED_3x3, 3)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, expected)
    np.testing.assert_array_equal(confusion(GT_3x3, PRED_3x3, 3, 3), expected)


def test_hungarian_hand_example() -> None:
    conf = confusion_matrix(GT_3x3, PRED_3x3, 3)
    # IoU scores: A[0,1] = 2/3, A[1,0] = 2/3, A[2,2] = 1 -> pred 0->1, 1->0, 2->2
    res = hungarian_miou(conf)
    np.testing.assert_array_equal(res.mapping, [1, 0, 2])
    # class 0: TP 2, |gt| 3, |pred| 2 -> 2/3; class 1: TP 2, |gt| 2, |pred| 3 -> 2/3; class 2: 1
    np.testing.assert_allclose(res.iou, [2 / 3, 2 / 3, 1.0])
    assert res.miou == pytest.approx(7 / 9)


def test_many_to_one_toy() -> None:
    conf = np.array([[5, 0, 1, 0], [2, 3, 1, 0], [0, 3, 4, 0]])
    res = many_to_one_miou(conf)
    # col 1 ties (3, 3) -> lowest class 1; empty col 3 -> class 0
    np.testing.assert_array_equal(res.mapping, [0, 1, 2, 0])
    # remapped rows: [5,0,1], [2,3,1], [0,3,4]
    np.testing.assert_allclose(res.iou, [5 / 8, 3 / 9, 4 / 9])
    assert res.miou == pytest.approx((5 / 8 + 1 / 3 + 4 / 9) / 3)


def test_hungarian_more_preds_than_classes() -> None:
    conf = np.array([[4, 1, 0], [0, 1, 5]])
    res = hungarian_miou(conf)
    np.testing.assert_array_equal(res.mapping, [0, 0, 1])  # pred 1 unmatched -> class 0
    np.testing.assert_allclose(res.iou, [5 / 6, 5 / 6])


def test_hungarian_fewer_preds_than_classes() -> None:
    conf = np.array([[4, 0], [0, 5], [1, 1]])
    res = hungarian_miou(conf)
    np.testing.assert_array_equal(res.mapping, [0, 1])
    np.testing.assert_allclose(res.iou, [4 / 5, 5 / 6, 0.0])
    assert res.miou == pytest.approx((4 / 5 + 5 / 6) / 3)


def test_miou_averages_over_the_classes_present_in_the_ground_truth() -> None:
    """A road scene labelled with 11 of 21 classes (the rest never appear in the GT): the mean runs
    over the 11 present classes; averaging over all 21 with absent classes as 0 would give
    11/21 of it. Absent classes are NaN even when a label was matched to them."""
    present = np.array([0, 2, 6, 7, 9, 11, 13, 14, 15, 16, 19])  # 11 classes
    ious = np.array([0.9, 0.1, 0.3, 0.5, 0.2, 0.0, 0.4, 0.6, 0.25, 0.15, 0.05])
    # diagonal-ish confusion per present class c: tp pixels on c, fn pixels on an extra label 21+i
    # so that IoU_c = tp / (tp + fn) exactly; absent classes have no GT pixel
    conf = np.zeros((21, 21 + present.size), dtype=np.int64)
    for i, (c, v) in enumerate(zip(present, ious, strict=True)):
        conf[c, c] = round(v * 100)
        conf[c, 21 + i] = 100 - round(v * 100)
    res = miou_from_mapping(conf, np.concatenate([np.arange(21), np.full(present.size, 1)]))
    # the extra labels are mapped to class 1, absent from the GT: pure false positives, still NaN
    expected = np.full(21, np.nan)
    expected[present] = ious
    np.testing.assert_allclose(res.iou, expected)
    assert res.classes_present == 11
    assert res.miou == pytest.approx(ious.sum() / 11)  # 0.3136..., not ious.sum() / 21 = 0.1643
    assert res.miou != pytest.approx(ious.sum() / 21)
    # Hungarian on the same confusion: the same present-class mean, one-to-one labels
    hung = hungarian_miou(conf)
    assert hung.classes_present == 11 and np.isnan(hung.iou[1])
    assert hung.miou == pytest.approx(np.nanmean(hung.iou))


def test_all_ignore_ground_truth_gives_nan_not_zero(caplog: pytest.LogCaptureFixture) -> None:
    from leopart.eval.score import score

    gt = np.full((2, 4, 4), 255, dtype=np.uint8)
    with caplog.at_level("WARNING"):
        rec = score(np.zeros((2, 2, 2), dtype=np.int64), gt, 3, "hungarian")
    assert np.isnan(rec["miou"]) and rec["classes"] == 0 and all(np.isnan(rec["iou_per_class"]))
    assert "no valid pixel" in caplog.text


# --------------------------------------------------------------------------- properties


def _random_case(rng: np.random.Generator, c: int, p: int, shape=(3, 17, 19)):
    gt = rng.integers(0, c, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    pred = rng.integers(0, p, size=shape).astype(np.int64)
    agree = (gt < 255) & (rng.random(shape) < 0.5)
    pred[agree] = gt[agree] % p
    return gt, pred


def _brute_hungarian(gt: np.ndarray, pred: np.ndarray, c: int, p: int) -> tuple[float, np.ndarray]:
    """The authors' formulation: IoU per (c, p) by full scans, assignment, remap pixels; the mean
    over the classes present in the GT (on PVOC val all 21 are)."""
    valid = gt != 255
    g, q = gt[valid].astype(np.int64), pred[valid]
    score = np.zeros((c, p))
    for ci in range(c):
        for pi in range(p):
            tp = np.sum((g == ci) & (q == pi))
            union = np.sum((g == ci) | (q == pi))
            score[ci, pi] = tp / union if union else 0.0
    rows, cols = linear_sum_assignment(1 - score)
    remapped = np.zeros_like(q)
    for r, col in zip(rows, cols):
        remapped[q == col] = r
    ious = []
    for ci in range(c):
        if not np.any(g == ci):
            continue  # absent from the GT: not averaged
        tp = np.sum((g == ci) & (remapped == ci))
        den = np.sum((g == ci) | (remapped == ci))
        ious.append(tp / den)
    mapping = np.zeros(p, dtype=np.int64)
    mapping[cols] = rows
    return float(np.mean(ious)), mapping


@pytest.mark.parametrize("c,p,seed", [(5, 5, 0), (4, 7, 1), (6, 4, 2)])
def test_hungarian_equals_brute_force(c: int, p: int, seed: int) -> None:
    gt, pred = _random_case(np.random.default_rng(seed), c, p)
    res = hungarian_miou(confusion_matrix(gt, pred, c, p))
    miou, mapping = _brute_hungarian(gt, pred, c, p)
    assert res.miou == pytest.approx(miou, abs=1e-12)
    np.testing.assert_array_equal(res.mapping, mapping)


def test_hungarian_permutation_invariant() -> None:
    rng = np.random.default_rng(3)
    gt, pred = _random_case(rng, 6, 6)
    base = hungarian_miou(confusion_matrix(gt, pred, 6, 6)).miou
    perm = rng.permutation(6)
    assert hungarian_miou(confusion_matrix(gt, perm[pred], 6, 6)).miou == pytest.approx(base, abs=1e-12)


def test_perfect_prediction_with_permuted_labels() -> None:
    rng = np.random.default_rng(4)
    gt = rng.integers(0, 21, size=(2, 40, 40)).astype(np.uint8)
    gt[:, :3] = 255
    perm = rng.permutation(21)
    pred = perm[np.where(gt == 255, 0, gt)]
    pred[gt == 255] = rng.integers(0, 21, size=int((gt == 255).sum()))  # ignored anyway
    res = hungarian_miou(confusion_matrix(gt, pred, 21))
    assert res.miou == 1.0
    np.testing.assert_array_equal(res.mapping[perm], np.arange(21))


def test_ignore_pixels_do_not_count() -> None:
    rng = np.random.default_rng(5)
    gt, pred = _random_case(rng, 4, 4)
    other = pred.copy()
    other[gt == 255] = (other[gt == 255] + 1) % 4
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 4, 4), confusion_matrix(gt, other, 4, 4))
    assert confusion_matrix(gt, pred, 4, 4).sum() == int((gt != 255).sum())


def test_chunking_and_memmap(tmp_path) -> None:
    rng = np.random.default_rng(6)
    gt, pred = _random_case(rng, 5, 8)
    mm_gt = np.lib.format.open_memmap(tmp_path / "gt.npy", mode="w+", dtype=np.uint8, shape=gt.shape)
    mm_gt[:] = gt
    mm_pred = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.int16, shape=gt.shape)
    mm_pred[:] = pred
    full = confusion_matrix(gt, pred, 5, 8)
    np.testing.assert_array_equal(confusion_matrix(mm_gt, mm_pred, 5, 8, chunk=101), full)
    assert confusion_matrix(gt, pred, 5).shape == (5, int(pred.max()) + 1)


def test_confusion_errors() -> None:
    gt = np.array([0, 1, 3], dtype=np.uint8)
    with pytest.raises(LeopartError, match="ground truth contains label 3"):
        confusion_matrix(gt, np.array([0, 1, 1]), 3)
    with pytest.raises(LeopartError, match="negative"):
        confusion_matrix(np.array([0, 1, 2], np.uint8), np.array([0, -1, 1]), 3)
    with pytest.raises(LeopartError, match="num_pred"):
        confusion_matrix(np.array([0, 1, 2], np.uint8), np.array([0, 5, 1]), 3, 3)
    with pytest.raises(LeopartError, match="shape"):
        confusion_matrix(np.zeros(3, np.uint8), np.zeros(4, np.int64), 3)
    with pytest.raises(LeopartError, match="integers"):
        confusion_matrix(np.zeros(3, np.uint8), np.zeros(3, np.float32), 3)


def test_real_voc_masks(voc_masks_dir) -> None:
    """Real PVOC masks (with 255 boundaries): permuted GT gives 1.0, matches brute force."""
    paths = sorted((voc_masks_dir / "SegmentationClass").glob("*.png"))[:6]
    gt = np.concatenate([np.array(Image.open(p)).reshape(-1) for p in paths])
    assert (gt == 255).any()
    rng = np.random.default_rng(7)
    perm = rng.permutation(21)
    pred = perm[np.where(gt == 255, 0, gt)]
    present = np.unique(gt[gt != 255])
    res = hungarian_miou(confusion_matrix(gt, pred, 21, 21))
    # classes present score 1; classes absent from the GT are NaN and not averaged
    np.testing.assert_array_equal(res.iou, np.where(np.isin(np.arange(21), present), 1.0, np.nan))
    assert res.miou == pytest.approx(1.0)
    assert res.classes_present == present.size
    # corrupt a block of predictions and compare with the pixel-level formulation
    pred[: pred.size // 3] = rng.integers(0, 21, size=pred.size // 3)
    gt, pred = gt[::9], pred[::9]  # keep the brute force short
    res = hungarian_miou(confusion_matrix(gt, pred, 21, 21))
    miou, _ = _brute_hungarian(gt, pred, 21, 21)
    assert res.miou == pytest.approx(miou, abs=1e-12)
    assert 0 < res.miou < 1 and present.size > 1


# --------------------------------------------------------------------------- per-image fg IoU


def test_per_image_fg_iou_hand_example() -> None:
    gt = np.array(
        [
            [[0, 1], [255, 0]],  # fg (255 counts): (0,1), (1,0)
            [[0, 0], [0, 2]],
            [[0, 0], [0, 0]],  # empty union with an empty prediction: skipped
        ],
        dtype=np.uint8,
    )
    pred = np.array(
        [
            [[True, True], [False, False]],  # inter 1, union 3
            [[False, False], [False, True]],  # inter 1, union 1
            [[False, False], [False, False]],
        ]
    )
    assert per_image_fg_iou(gt, pred) == pytest.approx((1 / 3 + 1) / 2)
    assert np.isnan(per_image_fg_iou(gt[2:], pred[2:]))
    with pytest.raises(LeopartError):
        per_image_fg_iou(gt[0], pred[0])

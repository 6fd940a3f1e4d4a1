"""Backbone validation helpers: the centred-Gaussian prior and attention-mask fg IoU."""

from __future__ import annotations

import numpy as np
import pytest

from leopart.errors import LeopartError
from leopart.eval.validate import (
    centred_gaussian_attention,
    failed_checks,
    fg_auc_of_attention,
    fg_iou_of_attention,
)


def test_gaussian_prior_is_centred_normalised_and_symmetric() -> None:
    g = centred_gaussian_attention(2, (6, 6), heads=3)
    assert g.shape == (2, 3, 36)
    np.testing.assert_allclose(g.sum(axis=2), 1.0, rtol=1e-6)
    m = g[0, 0].reshape(6, 6)
    np.testing.assert_allclose(m, m[::-1, ::-1], rtol=1e-6)
    assert m[2:4, 2:4].min() > m.max() * 0.99 - 1e-9 or m[2, 2] == m.max()


def test_fg_iou_of_attention_on_a_known_map() -> None:
    """GT built from the mask rule itself gives IoU 1; a GT twice as large gives |mask| / |GT|."""
    from leopart.features.attention import attention_masks
    from leopart.resample import upsample_labels

    attn = np.zeros((1, 1, 64), dtype=np.float32)
    attn[0, 0, [27, 28, 35, 36]] = 0.25  # a 2x2 block in the middle of an 8x8 grid
    mask = attention_masks(attn, (8, 8), threshold=0.65)
    gt = (upsample_labels(mask, 16) * 3).astype(np.uint8)
    gt[0, 0, 0] = 255  # ignored pixel (outside the mask)
    assert fg_iou_of_attention(attn, gt, (8, 8), threshold=0.65) == pytest.approx(1.0)
    gt_all = np.full((1, 16, 16), 2, dtype=np.uint8)
    expected = upsample_labels(mask, 16).sum() / 256
    assert fg_iou_of_attention(attn, gt_all, (8, 8), threshold=0.65) == pytest.approx(expected)


def test_only_the_attention_check_gates_shipping() -> None:
    """Both kinds are refused only on the attention check; overclustering vs random init and the
    Leopart Hungarian vs its DINO start are reported figures (the committed toy backbones fail
    them and are shipped)."""
    import json
    from pathlib import Path

    reported_false = {"attention_beats_gaussian_prior": True, "overclustering_beats_random_init": False,
                      "hungarian_beats_baseline": False}
    assert failed_checks({"passes": reported_false}, "dino") == []
    assert failed_checks({"passes": reported_false}, "leopart") == []
    bad_attention = {"passes": {**reported_false, "attention_beats_gaussian_prior": False}}
    assert failed_checks(bad_attention, "dino") == ["attention_beats_gaussian_prior"]
    assert failed_checks(bad_attention, "leopart") == ["attention_beats_gaussian_prior"]
    assert failed_checks({"passes": {}}, "dino") == ["attention_beats_gaussian_prior"]  # missing = failed
    with pytest.raises(LeopartError, match="unknown checkpoint kind"):
        failed_checks(bad_attention, "mae")
    root = Path(__file__).resolve().parents[1]
    for name, kind in (("dino_vit_toy", "dino"), ("leopart_vit_toy", "leopart")):
        figures = json.loads((root / "models" / "toy" / f"{name}.json").read_text())["validation"]
        assert figures["passes"]["overclustering_beats_random_init"] is False  # reported
        assert failed_checks(figures, kind) == []


def test_fg_auc_of_attention_known_answers() -> None:
    """Perfect ranking → 1, reversed → 0, constant → ½; ignored tokens and one-class images skipped."""
    gt = np.array([[[0, 0], [2, 255]], [[1, 1], [1, 1]]], dtype=np.uint8)  # image 2: all fg, skipped
    good = np.array([[[0.1, 0.2, 0.9, 0.0]], [[0.5, 0.5, 0.5, 0.5]]], dtype=np.float32)
    assert fg_auc_of_attention(good, gt) == pytest.approx(1.0)
    assert fg_auc_of_attention(-good, gt) == pytest.approx(0.0)
    assert fg_auc_of_attention(np.ones_like(good), gt) == pytest.approx(0.5)
    # two fg tokens, two bg: fg scores {0.3, 0.9}, bg {0.5, 0.1} -> 3 of 4 pairs ordered
    gt2 = np.array([[[1, 0], [1, 0]]], dtype=np.uint8)
    att2 = np.array([[[0.3, 0.5, 0.9, 0.1]]], dtype=np.float32)
    assert fg_auc_of_attention(att2, gt2) == pytest.approx(0.75)


def test_cluster_scores_of_class_coded_tokens_are_perfect_for_every_seed() -> None:
    """Tokens that encode the GT class exactly (one-hot + tiny noise) cluster perfectly: K = classes
    Hungarian and K > classes many-to-one are both 100 % at every k-means seed, one entry per seed."""
    from leopart.eval.validate import _cluster_scores

    rng = np.random.default_rng(0)
    classes = 3
    lab = rng.integers(0, classes, size=(6, 4, 4))               # token-resolution GT
    gt = np.repeat(np.repeat(lab, 5, axis=1), 5, axis=2).astype(np.uint8)   # (6, 20, 20), nearest x5
    tokens = np.eye(classes, dtype=np.float32)[lab] * 10.0
    tokens = np.concatenate([tokens, np.zeros((6, 4, 4, 3), np.float32)], axis=-1)
    tokens += rng.normal(0.0, 1e-3, tokens.shape).astype(np.float32)
    res = _cluster_scores(tokens, gt, classes, k_over=5, seeds=2)
    assert res["hungarian"] == pytest.approx(100.0)
    assert res["overcluster_many_to_one"] == pytest.approx(100.0)
    assert len(res["hungarian_per_seed"]) == 2 and len(res["overcluster_many_to_one_per_seed"]) == 2

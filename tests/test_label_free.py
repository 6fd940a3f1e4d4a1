"""Label-free choices (leopart.label_free): Otsu CBFE threshold and modularity CD selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_cd_search import _planted_maps

from leopart.cbfe import cbfe
from leopart.cd.cooccurrence import cooccurrence
from leopart.cd.search import search_cd
from leopart.errors import LeopartError
from leopart.label_free import best_setting_label_free, modularity, otsu_threshold


def test_otsu_splits_a_bimodal_distribution_between_its_modes() -> None:
    # sorted: .1 .15 .2 .3 | .7 .8 .85 .9 -> cut 4, threshold (0.3 + 0.7) / 2 = 0.5
    prec = np.array([0.1, 0.2, 0.15, 0.9, 0.8, 0.85, 0.3, 0.7])
    res = otsu_threshold(prec, (0.0, 1.0))
    assert res.best_cut == 4 and res.threshold == pytest.approx(0.5) and res.raw_threshold == 0.7
    # between-group variance at cut 4: 0.5 * 0.5 * (0.1875 - 0.8125)^2
    assert res.scores[res.cuts == 4][0] == pytest.approx(0.25 * 0.625**2)
    # the cut range restricts the cuts as the paper's search (k=8: starts 5..5 only)
    narrow = otsu_threshold(prec, (0.65, 0.75))
    assert narrow.cuts.tolist() == [5] and narrow.threshold == pytest.approx(0.75)


def test_otsu_ignores_absent_clusters_and_refuses_an_empty_range() -> None:
    prec = np.array([np.nan, 0.1, 0.9, 0.12, 0.88])  # absent cluster sorts first, takes no part
    res = otsu_threshold(prec, (0.0, 1.0))
    assert res.best_cut == 3 and res.threshold == pytest.approx((0.12 + 0.88) / 2)
    with pytest.raises(LeopartError, match="leaves no cut"):
        otsu_threshold(prec, (0.5, 0.55))


def test_cbfe_label_free_reads_no_ground_truth() -> None:
    """Clusters 0/1 lie inside the attention mask, 2/3 outside: Otsu makes 0/1 foreground."""
    labels = np.array([[[0, 1], [2, 3]]] * 3)
    attn = np.array([[[1, 1], [0, 0]]] * 3, dtype=bool)
    weights = np.ones((2, 2), dtype=np.int64)
    res = cbfe(labels, labels, attn, attn, None, 4, weights, eval_size=2, cut_fractions=(0.0, 1.0),
               label_free=True)
    assert res.threshold == pytest.approx(0.5) and res.table["fg_train"].tolist() == [True, True, False, False]
    np.testing.assert_array_equal(res.fg_val, attn)
    with pytest.raises(LeopartError, match="no train ground truth"):
        cbfe(labels, labels, attn, attn, None, 4, weights, eval_size=2)


def test_modularity_of_two_cliques() -> None:
    """Two disconnected triangles (weight 1): W = 12, each side W_cc = S_c = 6 -> Q = 2 (1/2 - 1/4)."""
    m = np.zeros((6, 6))
    for block in (range(3), range(3, 6)):
        for i in block:
            for j in block:
                m[i, j] = 1.0
    assert modularity(m, np.array([1, 1, 1, 2, 2, 2])) == pytest.approx(0.5)
    assert modularity(m, np.ones(6, int)) == pytest.approx(0.0)
    assert modularity(m, np.array([1, 2, 1, 2, 1, 2])) < 0
    assert modularity(np.full((3, 3), np.nan), np.array([0, 1, 2])) == 0.0
    # a background hub touching both triangles is left out: the same Q as without it
    hub = np.ones((7, 7))
    hub[:6, :6] = m
    assert modularity(hub, np.array([1, 1, 1, 2, 2, 2, 0]), background_label=6) == pytest.approx(0.5)
    assert modularity(hub, np.array([1, 1, 1, 2, 2, 2, 0])) < 0.5
    with pytest.raises(LeopartError, match="modules for a matrix"):
        modularity(m, np.ones(5, int))


def test_label_free_selection_finds_the_planted_communities_without_gt() -> None:
    labels, _ = _planted_maps()
    matrix, _ = cooccurrence([labels], 5)
    res = search_cd(matrix, None, [0.05, 0.3], [1.0], seeds=[1, 2], preferred_modules=None)
    assert res["miou"].isna().all()
    best = best_setting_label_free(res)
    # wt 0.05: one community (Q = 0); wt 0.3: the two part pairs (+ the isolated background, left
    # out of the modularity): on the fg labels two pairs of weight 0.362 / 0.41 -> Q = 1/2
    assert best["weight_threshold"] == 0.3 and best["num_modules"] == 2
    assert best["modularity"] == pytest.approx(0.5)
    assert (res[res.weight_threshold == 0.05].modularity.abs() < 1e-12).all()


def test_label_free_selection_ties_go_to_the_first_setting() -> None:
    res = pd.DataFrame({"weight_threshold": [0.1, 0.1, 0.2, 0.2], "markov_time": [1.0] * 4, "seed": [1, 2, 1, 2],
                        "modularity": [0.3, 0.1, 0.2, 0.2], "num_modules": [3, 3, 4, 4],
                        "isolated_labels": [0, 0, 1, 1], "miou": [np.nan] * 4})
    best = best_setting_label_free(res)
    assert best["weight_threshold"] == 0.1 and best["modularity"] == pytest.approx(0.2) and best["runs"] == 2
    with pytest.raises(LeopartError, match="no results"):
        best_setting_label_free(res.iloc[:0])

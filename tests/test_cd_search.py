"""Tests for leopart.cd.search: train-split model selection of the CD settings (spec §8.6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leopart.cd import communities
from leopart.cd.communities import merge_labels, run_infomap
from leopart.cd.cooccurrence import cooccurrence, edge_list
from leopart.cd.search import best_setting, merged_confusion, search_cd
from leopart.errors import LeopartError
from leopart.eval.score import eval_confusion, score


def test_merged_confusion_equals_scoring_the_merged_map() -> None:
    """Summing label columns per module = confusion of the merged label map (brute force)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, size=(5, 4, 4))
    gt = rng.integers(0, 3, size=(5, 8, 8)).astype(np.uint8)
    gt[0, :2] = 255
    module_of = np.array([0, 1, 1, 2, 0, 3, 3, 3, 2])
    direct = eval_confusion(merge_labels(labels, module_of), gt, 3, num_pred=4)
    via_labels = merged_confusion(eval_confusion(labels, gt, 3, num_pred=9), module_of)
    np.testing.assert_array_equal(via_labels, direct)
    with pytest.raises(LeopartError, match="module ids"):
        merged_confusion(np.zeros((3, 9)), module_of[:5])


def _planted_maps() -> tuple[np.ndarray, np.ndarray]:
    """Label maps where labels {0, 1} always touch (class 1), {2, 3} always touch (class 2) and
    label 4 is the background around them; GT at the same resolution. Co-occurrence: the part
    pairs 0.36/0.41 both ways, background→part 0.24/0.26."""
    n, s = 12, 8
    labels = np.full((n, s, s), 4, np.int64)
    gt = np.zeros((n, s, s), np.uint8)
    for i in range(n):
        a, b, cls = (0, 1, 1) if i % 2 == 0 else (2, 3, 2)
        labels[i, 2:4, 1:7] = a  # two parts sharing a long boundary
        labels[i, 4:6, 1:7] = b
        gt[i, 2:6, 1:7] = cls
    return labels, gt


def test_search_finds_the_planted_communities() -> None:
    labels, gt = _planted_maps()
    matrix, _ = cooccurrence([labels], 5)
    conf = eval_confusion(labels, gt, 3, num_pred=5)
    res = search_cd(matrix, conf, [0.05, 0.3], [1.0], seeds=[1, 2], preferred_modules=None)
    assert list(res.columns) == ["weight_threshold", "markov_time", "seed", "miou", "modularity", "num_modules",
                                 "isolated_labels", "edges", "codelength", "module_of", "infomap_version", "infomap"]
    assert (res.infomap == "current").all() and (res.infomap_version == communities.infomap.__version__).all()
    assert len(res) == 4
    # wt 0.05 keeps the background edges: everything is one community; wt 0.3 keeps only the two
    # part pairs, the background label is isolated (module 0, matched to background): perfect
    high = res[res.weight_threshold == 0.3]
    assert (high.miou == 100.0).all() and (high.num_modules == 2).all() and (high.isolated_labels == 1).all()
    low = res[res.weight_threshold == 0.05]
    assert (low.num_modules == 1).all() and (low.miou < 50).all()
    best = best_setting(res)
    assert best["weight_threshold"] == 0.3 and best["miou"] == 100.0 and best["runs"] == 2
    # the scores equal scoring the merged maps directly
    r = run_infomap(edge_list(matrix, 0.05), 5, seed=1, markov_time=1.0, preferred_modules=None)
    direct = score(merge_labels(labels, r.module_of), gt, 3, "hungarian", num_pred=int(r.module_of.max()) + 1)
    assert low.iloc[0].miou == pytest.approx(direct["miou"])


def test_best_setting_mean_over_seeds_and_first_on_ties() -> None:
    res = pd.DataFrame({
        "weight_threshold": [0.1, 0.1, 0.2, 0.2, 0.3, 0.3], "markov_time": [1.0] * 6,
        "seed": [1, 2] * 3, "miou": [50.0, 30.0, 45.0, 45.0, 45.0, 45.0],
        "num_modules": [2, 4, 3, 3, 3, 3], "isolated_labels": [0, 2, 1, 1, 1, 1], "edges": [5] * 6,
    })
    best = best_setting(res)
    assert best["weight_threshold"] == 0.2 and best["miou"] == 45.0 and best["miou_std"] == 0.0
    assert best["num_modules"] == 3.0
    with pytest.raises(LeopartError, match="no results"):
        best_setting(res.iloc[:0])


def test_empty_grid_names_the_key() -> None:
    with pytest.raises(LeopartError, match="cd.search"):
        search_cd(np.zeros((3, 3)), np.zeros((2, 3)), [], [1.0], [1])

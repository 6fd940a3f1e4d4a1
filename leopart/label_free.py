"""Label-free choices of the two settings the paper picks with train ground truth.

The paper protocol chooses the CBFE precision threshold (spec §7.1) and the CD setting (edge
weight threshold, Infomap Markov time; spec §8.6) by maximising scores against the *train* masks.
Without masks (``dataset.kind: folder`` with ``masks: null``) both are chosen by criteria that read
no label, on train only; with masks they are reported as extra table rows, so the cost of dropping
labels is measured (README "Your own images").

**CBFE threshold — Otsu on the cluster precisions** (:func:`otsu_threshold`). The train attention
precisions of the k clusters are bimodal when attention separates objects from background:
background clusters near 0, object clusters near 1. Over the same cuts the paper's search tries
(clusters sorted by precision, cut starts in ``range(int(lo·k), int(hi·k))``, ``cbfe.cut_range``),
the cut maximising Otsu's between-group variance ``w0 · w1 · (m0 − m1)²`` of the precisions is
chosen (``w`` = share of clusters in a group, ``m`` = its mean precision; absent clusters take no
part); the threshold is the midpoint between the highest background and the lowest foreground
precision, so exactly the clusters above the cut are foreground (no rounding).

**CD setting — modularity of the partition** (:func:`modularity`,
:func:`best_setting_label_free`). Every ``(weight threshold, Markov time)`` of ``cd.search`` yields
an Infomap partition of the labels per seed, on a graph that depends on the setting. Each partition
is scored on one fixed graph, the whole symmetrised co-occurrence matrix of the foreground labels
(diagonal dropped, NaN rows of labels without neighbours as 0; the background label left out: it
touches every object, a hub that would make any split of the objects look bad), by Newman's
weighted modularity
``Q = Σ_c [W_cc / W − (S_c / W)²]`` (``W_cc`` = weight inside community ``c`` counted both ways,
``S_c`` its total strength, ``W`` the total weight), with the isolated labels (module 0) as one
community, as they are merged. The setting with the highest mean ``Q`` over the Infomap seeds wins
(first in grid order on ties). Codelength is not compared: it is measured on a different graph and
Markov time for every setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from leopart.errors import LeopartError

__all__ = ["OtsuResult", "best_setting_label_free", "modularity", "otsu_threshold"]


class OtsuResult:
    """Outcome of :func:`otsu_threshold`.

    Attributes:
        threshold: midpoint between the precisions either side of the chosen cut.
        raw_threshold: precision of the cluster at rank ``best_cut`` (the lowest foreground one).
        best_cut: clusters with rank ``>= best_cut`` (sorted by precision, absent first) are foreground.
        cuts: ``(n_cuts,)`` int64 cut starts tried.
        scores: ``(n_cuts,)`` float64 between-group variance of each cut.
        order: ``(k,)`` int64 cluster ids sorted by precision ascending (absent first).
    """

    def __init__(self, threshold: float, raw_threshold: float, best_cut: int, cuts: np.ndarray,
                 scores: np.ndarray, order: np.ndarray) -> None:
        self.threshold, self.raw_threshold, self.best_cut = threshold, raw_threshold, best_cut
        self.cuts, self.scores, self.order = cuts, scores, order


def otsu_threshold(prec: np.ndarray, cut_fractions: tuple[float, float] = (0.55, 0.75)) -> OtsuResult:
    """CBFE threshold without labels: Otsu's split of the cluster precisions (module docstring).

    Args:
        prec: ``(k,)`` train attention precision per cluster, NaN for clusters absent from train
            (:func:`leopart.cbfe.cluster_precision`).
        cut_fractions: ``(lo, hi)``: cut starts ``range(int(lo·k), int(hi·k))`` as the paper's search.

    Returns:
        :class:`OtsuResult` (first maximum on ties).

    Raises:
        LeopartError: no cut in the range, or no cut with clusters present on both sides.
    """
    from leopart.cbfe import precision_order

    prec = np.asarray(prec, dtype=np.float64)
    k = prec.shape[0]
    order = precision_order(prec)
    lo, hi = int(cut_fractions[0] * k), int(cut_fractions[1] * k)
    cuts = np.arange(max(lo, 1), min(hi, k), dtype=np.int64)
    if cuts.size == 0:
        raise LeopartError(f"cbfe.cut_range={tuple(cut_fractions)} leaves no cut for k={k}")
    sorted_prec = prec[order]
    present = ~np.isnan(sorted_prec)
    values = np.where(present, sorted_prec, 0.0)
    n_total = int(present.sum())
    scores = np.full(cuts.size, np.nan)
    for i, c in enumerate(cuts):
        n0, n1 = int(present[:c].sum()), int(present[c:].sum())
        if n0 == 0 or n1 == 0:
            continue
        m0, m1 = values[:c].sum() / n0, values[c:].sum() / n1
        scores[i] = (n0 / n_total) * (n1 / n_total) * (m0 - m1) ** 2
    if np.isnan(scores).all():
        raise LeopartError(f"CBFE label-free threshold: no cut in cbfe.cut_range has clusters present on both "
                           f"sides ({n_total} of {k} clusters present in train)")
    best_i = int(np.nanargmax(scores))
    best_cut = int(cuts[best_i])
    below = sorted_prec[:best_cut][present[:best_cut]]
    raw = float(sorted_prec[best_cut])
    threshold = float((below.max() + raw) / 2.0) if below.size else raw
    return OtsuResult(threshold, raw, best_cut, cuts, scores, order)


def modularity(matrix: np.ndarray, module_of: np.ndarray, background_label: int | None = None) -> float:
    """Weighted modularity of a partition of the labels on the co-occurrence graph.

    Args:
        matrix: ``(L, L)`` row-normalised co-occurrence (NaN rows allowed); symmetrised as
            ``(M + Mᵀ) / 2`` with the diagonal set to 0.
        module_of: ``(L,)`` community of every label (0 = isolated labels, one community).
        background_label: a label left out of the graph (the CBFE background label ``L - 1``:
            a hub that touches every object and says nothing about which parts belong together).

    Returns:
        ``Q`` in ``[-0.5, 1)``; 0.0 for a graph without weight.
    """
    m = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0)
    mods = np.asarray(module_of, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or mods.shape != (m.shape[0],):
        raise LeopartError(f"modularity: {mods.shape} modules for a matrix of shape {m.shape}")
    if background_label is not None:
        keep = np.arange(m.shape[0]) != background_label
        m, mods = m[np.ix_(keep, keep)], mods[keep]
    a = (m + m.T) / 2.0
    np.fill_diagonal(a, 0.0)
    total = a.sum()
    if total <= 0:
        return 0.0
    same = mods[:, None] == mods[None, :]
    strength = np.bincount(mods, weights=a.sum(axis=1))
    return float(a[same].sum() / total - ((strength / total) ** 2).sum())


def best_setting_label_free(results: pd.DataFrame, keys: Sequence[str] = ("weight_threshold", "markov_time")
                            ) -> dict[str, Any]:
    """The setting with the highest mean ``modularity`` over seeds (first in grid order on ties).

    Args:
        results: one row per Infomap run with ``keys``, ``seed``, ``modularity``, ``num_modules``,
            ``isolated_labels`` and optionally ``miou`` (NaN without labels).

    Returns:
        The setting, its mean/std modularity, mean modules and isolated labels, runs, and its mean
        train ``miou`` when the results have one (for the record; never used to choose).
    """
    if results.empty:
        raise LeopartError("cd label-free selection: no results to choose from")
    keys = list(keys)
    agg = (results.groupby(keys, sort=False)
           .agg(modularity=("modularity", "mean"), modularity_std=("modularity", lambda v: float(np.std(v))),
                num_modules=("num_modules", "mean"), isolated_labels=("isolated_labels", "mean"),
                runs=("seed", "size"), miou=("miou", "mean"))
           .reset_index())
    best = agg.iloc[int(np.argmax(agg["modularity"].to_numpy()))]
    return {k: (int(best[k]) if k == "runs" else float(best[k])) for k in agg.columns}

"""Model selection of the CD settings on the train split (spec §8.6).

The authors choose the overclustering K, the edge weight threshold and the Infomap markov time
by maximising the **train** mIoU (Hungarian against train GT, mean over the Infomap runs) of the
whole CD pipeline, then run it once on val with the best values (ViT-S/16: K=149, wt 0.09, mt 2).
That is model selection with train labels, like the CBFE threshold (spec §11.13–14); val is never
looked at. The authors search with optuna's TPE over wt ∈ {0.01..0.10}, mt ∈ {0.1..2.0} and
K ∈ {99..249}; here the grid over ``(wt, mt)`` is searched exhaustively for one fg clustering (one
K: request the search of several ``fg_k<K>`` folders to compare K).

Scoring a partition needs no merged label map: merging labels into modules sums columns of the
label-vs-class confusion matrix, so the train confusion of the K+1 labels is computed once
(:func:`leopart.eval.score.eval_confusion`) and every ``(wt, mt, seed)`` is scored from it
(:func:`merged_confusion`) — identical to merging the maps and scoring them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leopart.cd.communities import InfomapRun, run_infomap_runs
from leopart.cd.cooccurrence import edge_list
from leopart.errors import LeopartError
from leopart.metrics import hungarian_miou

__all__ = ["merged_confusion", "search_cd", "best_setting"]


def merged_confusion(label_conf: np.ndarray, module_of: np.ndarray) -> np.ndarray:
    """Confusion of the merged map from the confusion of its labels.

    Args:
        label_conf: ``(C, L)`` pixel counts, GT class × original label.
        module_of: ``(L,)`` module id of every label (0 = label not in the graph).

    Returns:
        ``(C, M + 1)`` int64 counts, column ``m`` = pixels whose label is in module ``m``;
        ``M = module_of.max()``.
    """
    conf = np.asarray(label_conf)
    mods = np.asarray(module_of, dtype=np.int64)
    if conf.ndim != 2 or mods.shape != (conf.shape[1],):
        raise LeopartError(f"cd search: {mods.shape} module ids for a confusion matrix of shape {conf.shape}")
    out = np.zeros((conf.shape[0], int(mods.max()) + 1 if mods.size else 1), dtype=np.int64)
    np.add.at(out.T, mods, conf.T)
    return out


def search_cd(
    matrix: np.ndarray,
    label_conf: np.ndarray | None,
    weight_thresholds: Sequence[float],
    markov_times: Sequence[float],
    seeds: Sequence[int],
    preferred_modules: int | None = None,
    two_level: bool = True,
    num_trials: int = 1,
    behaviour: str = "current",
    env_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Score every ``(weight threshold, markov time, Infomap seed)`` on one split.

    Args:
        matrix: ``(L, L)`` co-occurrence matrix (:func:`leopart.cd.cooccurrence.cooccurrence`).
        label_conf: ``(C, L)`` confusion of the split's label map against its GT (valid pixels);
            ``None`` without labels (``miou`` NaN).
        weight_thresholds, markov_times: the grid (``cd.search``).
        seeds: Infomap seeds, one run each (``cd.seeds``).
        preferred_modules, two_level, num_trials: Infomap options as in the ``infomap`` rule.
        behaviour, env_dir: ``cd.infomap`` behaviour and the 2.2.0 build (as
            :func:`leopart.cd.communities.run_infomap_runs`); all runs go to one worker process.

    Returns:
        One row per run: ``weight_threshold``, ``markov_time``, ``seed``, ``miou`` (%, Hungarian),
        ``modularity`` (of the partition on the whole co-occurrence graph,
        :func:`leopart.label_free.modularity`), ``module_of`` (the partition, a list),
        ``num_modules``, ``isolated_labels``, ``edges``, ``codelength``, ``infomap_version``,
        ``infomap`` (the behaviour).
    """
    if not weight_thresholds or not markov_times or not seeds:
        raise LeopartError("cd.search: weight_thresholds, markov_times and cd.seeds must be non-empty")
    from leopart.label_free import modularity

    num_labels = int(np.asarray(matrix).shape[0])
    if label_conf is not None and np.asarray(label_conf).shape[1] != num_labels:
        raise LeopartError(f"cd search: confusion has {np.asarray(label_conf).shape[1]} labels, "
                           f"the co-occurrence matrix {num_labels}")
    graphs = [edge_list(matrix, float(wt)) for wt in weight_thresholds]
    grid = [(g, float(wt), float(mt), int(seed)) for g, wt in enumerate(weight_thresholds)
            for mt in markov_times for seed in seeds]
    runs = [InfomapRun(graph=g, seed=seed, markov_time=mt, two_level=two_level,
                       preferred_modules=preferred_modules, num_trials=num_trials) for g, _, mt, seed in grid]
    results = run_infomap_runs(graphs, num_labels, runs, behaviour=behaviour, env_dir=env_dir)
    rows: list[dict[str, Any]] = []
    for (g, wt, mt, seed), res in zip(grid, results, strict=True):
        miou = float("nan")
        if label_conf is not None:
            miou = float(hungarian_miou(merged_confusion(label_conf, res.module_of)).miou) * 100.0
        rows.append({"weight_threshold": wt, "markov_time": mt, "seed": seed, "miou": miou,
                     "modularity": modularity(matrix, res.module_of, background_label=num_labels - 1),
                     "num_modules": int(res.num_modules), "isolated_labels": len(res.isolated),
                     "edges": len(graphs[g]), "codelength": float(res.codelength),
                     "module_of": [int(v) for v in res.module_of],
                     "infomap_version": res.version, "infomap": res.behaviour})
    return pd.DataFrame(rows)


def best_setting(results: pd.DataFrame) -> dict[str, Any]:
    """The ``(weight threshold, markov time)`` with the highest mean mIoU over seeds.

    Ties go to the first setting in grid order (stable). Returns the setting, its mean and std
    mIoU (%), and the mean number of modules and isolated labels.
    """
    if results.empty:
        raise LeopartError("cd search: no results to choose from")
    keys = ["weight_threshold", "markov_time"]
    agg = (results.groupby(keys, sort=False)
           .agg(miou=("miou", "mean"), miou_std=("miou", lambda v: float(np.std(v))),
                num_modules=("num_modules", "mean"), isolated_labels=("isolated_labels", "mean"),
                runs=("seed", "size"))
           .reset_index())
    best = agg.iloc[int(np.argmax(agg["miou"].to_numpy()))]
    return {k: (float(best[k]) if k != "runs" else int(best[k])) for k in agg.columns}

"""Stages of community detection (spec §8): co-occurrence, edges, Infomap runs, scoring."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from leopart.cd.communities import merge_labels, run_infomap
from leopart.cd.cooccurrence import cooccurrence as run_cooccurrence
from leopart.cd.cooccurrence import edge_list
from leopart.cd.search import best_setting, search_cd
from leopart.errors import LeopartError
from leopart.evaluate import eval_confusion, match_result_dict
from leopart.io import (load_npy, npy_writer, provenance, read_parquet, save_npy, sidecar_path,
                        write_json, write_parquet)
from leopart.metrics import hungarian_miou
from leopart.resample import upsample_labels
from leopart.stages.runner import params_of

log = logging.getLogger(__name__)


def cooccurrence(smk: Any) -> None:
    """Co-occurrence matrix ``(L, L)`` of the k+1 labels over train ∪ val at eval resolution."""
    size = int(smk.params.eval_size)
    maps = []
    for path in (smk.input.train, smk.input.val):
        tok = load_npy(path, ndim=3, dtype_kind="iu", what="label map")
        maps.append(upsample_labels(np.asarray(tok, dtype=np.int16), size))
    num_labels = int(smk.wildcards.k) + 1
    matrix, appearances = run_cooccurrence(maps, num_labels)
    save_npy(smk.output.matrix, matrix)
    save_npy(smk.output.appearances, appearances)
    absent = np.flatnonzero(appearances == 0)
    if absent.size:
        log.warning("labels %s never neighbour another label: their rows are NaN", absent.tolist())
    write_json(sidecar_path(smk.output.matrix), provenance(
        stage="cooccurrence", params=params_of(smk), inputs={n: p for n, p in smk.input.items()},
        extra={"num_labels": num_labels, "background_label": num_labels - 1,
               "images": [int(m.shape[0]) for m in maps], "labels_without_appearance": absent}))


def cd_edges(smk: Any) -> None:
    """Edge list (Parquet: source, target, weight) at weight threshold ``wt``."""
    matrix = load_npy(smk.input.matrix, ndim=2, dtype_kind="f", what="co-occurrence matrix")
    wt = float(smk.wildcards.wt)
    edges = edge_list(np.asarray(matrix), wt)
    write_parquet(smk.output.edges, edges)
    nodes = np.unique(edges[["source", "target"]].to_numpy()) if len(edges) else np.array([], int)
    log.info("weight threshold %g: %d edges over %d of %d labels", wt, len(edges), nodes.size, matrix.shape[0])


def infomap(smk: Any) -> None:
    """Run Infomap once per seed; write communities (run, node, module) and per-run statistics."""
    edges = read_parquet(smk.input.edges, what="edge list")
    num_nodes = int(load_npy(smk.input.matrix, ndim=2, what="co-occurrence matrix").shape[0])
    pm = None if smk.wildcards.pm == "none" else int(smk.wildcards.pm)
    mt = float(smk.wildcards.mt)
    rows, stats = [], []
    for seed in smk.params.seeds:
        res = run_infomap(edges, num_nodes, seed=int(seed), markov_time=mt,
                          two_level=bool(smk.params.two_level), preferred_modules=pm,
                          num_trials=int(smk.params.num_trials))
        rows.append(pd.DataFrame({"seed": int(seed), "node": np.arange(num_nodes),
                                  "module": res.module_of.astype(np.int32)}))
        stats.append({"seed": int(seed), "num_modules": int(res.num_modules),
                      "codelength": float(res.codelength), "isolated_nodes": len(res.isolated),
                      "infomap_version": res.version, "markov_time": mt,
                      "preferred_modules": pm if pm is not None else -1})
        log.info("seed %d: %d modules, %d isolated labels, codelength %.4f",
                 seed, res.num_modules, len(res.isolated), res.codelength)
    write_parquet(smk.output.communities, pd.concat(rows, ignore_index=True))
    write_parquet(smk.output.runs, pd.DataFrame(stats))


def cd_score(smk: Any) -> None:
    """Merge val labels into communities (0 = isolated label) per run; Hungarian mIoU per run."""
    comms = read_parquet(smk.input.communities, what="communities")
    labels = load_npy(smk.input.labels, ndim=3, dtype_kind="iu", what="label map")
    gt = load_npy(smk.input.gt, ndim=3, dtype_kind="u", what="ground truth")
    num_classes = int(smk.params.num_classes)
    seeds = sorted(comms["seed"].unique().tolist())
    per_run = []
    with npy_writer(smk.output.merged, (len(seeds), *labels.shape), np.int16) as merged:
        for r, seed in enumerate(seeds):
            part = comms[comms["seed"] == seed].sort_values("node")
            module_of = part["module"].to_numpy(dtype=np.int64)
            merged_r = merge_labels(np.asarray(labels), module_of)
            merged[r] = merged_r
            n_labels = int(module_of.max()) + 1
            if n_labels > num_classes:
                msg = (f"seed {seed}: Infomap found {n_labels - 1} modules (+ label 0 for isolated "
                       f"labels) for {num_classes} classes")
                if smk.params.too_many_modules == "fail":
                    raise LeopartError(f"{msg}; set cd.too_many_modules: unmatched_to_background to score anyway")
                log.warning("%s: unmatched modules are scored as background", msg)
            conf = eval_confusion(merged_r, gt, num_classes, num_pred=max(n_labels, 1))
            rec = match_result_dict(hungarian_miou(conf), conf, "hungarian")
            rec.update({"seed": int(seed), "num_modules": int(np.unique(module_of[module_of > 0]).size)})
            per_run.append(rec)
    mious = np.array([r["miou"] for r in per_run])
    record = {
        "miou": float(mious.mean()), "miou_std": float(mious.std()), "runs": per_run,
        "num_runs": len(per_run), "merged_maps": str(smk.output.merged),
        **provenance(stage="cd_score", params=params_of(smk), inputs={n: p for n, p in smk.input.items()}),
    }
    write_json(smk.output.metrics, record)
    log.info("+CD mIoU = %.2f ± %.2f %% over %d runs", record["miou"], record["miou_std"], len(per_run))


def cd_search(smk: Any) -> None:
    """Grid search of (weight threshold, markov time) on the train split with train GT (spec §8.6)."""
    labels = load_npy(smk.input.labels, ndim=3, dtype_kind="iu", what="label map")
    gt = load_npy(smk.input.gt, ndim=3, dtype_kind="u", what="ground truth")
    matrix = np.asarray(load_npy(smk.input.matrix, ndim=2, dtype_kind="f", what="co-occurrence matrix"))
    num_classes = int(smk.params.num_classes)
    label_conf = eval_confusion(labels, gt, num_classes, num_pred=matrix.shape[0])
    grid = smk.params.grid
    results = search_cd(matrix, label_conf, grid["weight_thresholds"], grid["markov_times"], smk.params.seeds,
                        preferred_modules=smk.params.preferred_modules, two_level=bool(smk.params.two_level),
                        num_trials=int(smk.params.num_trials))
    write_parquet(smk.output.results, results)
    best = best_setting(results)
    write_json(smk.output.best, {
        "best": best, "split": "train", "selected_by": "mean train mIoU (Hungarian, train GT) over the Infomap seeds",
        **provenance(stage="cd_search", params=params_of(smk), inputs={n: p for n, p in smk.input.items()}),
    })
    log.info("best on train: weight threshold %g, markov time %g -> %.2f ± %.2f %% (%.1f modules, %.1f isolated)",
             best["weight_threshold"], best["markov_time"], best["miou"], best["miou_std"],
             best["num_modules"], best["isolated_labels"])

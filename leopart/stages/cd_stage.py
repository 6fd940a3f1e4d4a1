"""Stages of community detection (spec §8): co-occurrence, edges, Infomap runs, scoring."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leopart.cd.communities import InfomapRun, merge_labels, run_infomap_runs
from leopart.cd.cooccurrence import cooccurrence as run_cooccurrence, edge_list
from leopart.cd.infomap_env import AUTHORS_VERSION, ensure_infomap_env, read_manifest
from leopart.cd.search import best_setting, search_cd
from leopart.errors import LeopartError
from leopart.eval.score import eval_confusion, match_result_dict
from leopart.io import load_npy, npy_writer, read_json, read_parquet, save_npy, write_json, write_parquet
from leopart.metrics import hungarian_miou
from leopart.resample import UpsampledLabels
from leopart.stages.runner import Sidecars, StageCall

log = logging.getLogger(__name__)


def cooccurrence(call: StageCall) -> Sidecars:
    """Co-occurrence matrix ``(L, L)`` of the k+1 labels over train ∪ val at eval resolution."""
    size = int(call.params["eval_size"])
    maps = []
    for path in (call.input["train"], call.input["val"]):
        tok = load_npy(path, ndim=3, dtype_kind="iu", what="label map")
        maps.append(UpsampledLabels(tok, size, np.int16))  # upsampled a chunk at a time
    num_labels = int(call.wildcards["k"]) + 1
    matrix, appearances = run_cooccurrence(maps, num_labels)
    save_npy(call.output["matrix"], matrix)
    save_npy(call.output["appearances"], appearances)
    absent = np.flatnonzero(appearances == 0)
    if absent.size:
        log.warning("labels %s never neighbour another label: their rows are NaN", absent.tolist())
    return {"matrix": {"num_labels": num_labels, "background_label": num_labels - 1,
                       "images": [int(m.shape[0]) for m in maps], "labels_without_appearance": absent}}


def cd_edges(call: StageCall) -> None:
    """Edge list (Parquet: source, target, weight) at the job's weight threshold."""
    matrix = load_npy(call.input["matrix"], ndim=2, dtype_kind="f", what="co-occurrence matrix")
    threshold = float(call.wildcards["weight_threshold"])
    edges = edge_list(np.asarray(matrix), threshold)
    write_parquet(call.output["edges"], edges)
    nodes = np.unique(edges[["source", "target"]].to_numpy()) if len(edges) else np.array([], int)
    log.info("weight threshold %g: %d edges over %d of %d labels", threshold, len(edges), nodes.size,
             matrix.shape[0])


def infomap_env(call: StageCall) -> None:
    """Build (once) the infomap of ``cd.infomap: authors`` under the shared root; record it for this run."""
    path = ensure_infomap_env(call.params["version"], call.params["root"])
    write_json(call.output["record"], {**(read_manifest(path) or {}), "path": str(path.resolve()),
                                       "root": str(path.parent.resolve())})
    log.info("infomap %s ready in %s", call.params["version"], path)


def _infomap_env_dir(call: StageCall) -> Path | None:
    """For ``cd.infomap: authors`` the 2.2.0 build recorded by the ``infomap_env`` input (rebuilt
    if it went missing since), else ``None``."""
    if call.params["infomap"] != "authors":
        return None
    record = call.input["infomap_env"]
    record = read_json(record if isinstance(record, str) else record[0], what="infomap build record")
    return ensure_infomap_env(AUTHORS_VERSION, record["root"])


def _preferred_modules(value: Any) -> int | None:
    """``cd.preferred_modules`` as Infomap takes it: ``None`` for null or the path value ``"none"``."""
    return None if value in (None, "none") else int(value)


def _search_grid(call: StageCall, matrix: np.ndarray, label_conf: np.ndarray | None) -> pd.DataFrame:
    """Every ``(weight threshold, markov time)`` of ``params.grid`` × every Infomap seed on ``matrix``
    (:func:`leopart.cd.search.search_cd`; ``label_conf`` ``None`` = no ground truth, NaN mIoU)."""
    p = call.params
    return search_cd(matrix, label_conf, p["grid"]["weight_thresholds"], p["grid"]["markov_times"], p["seeds"],
                     preferred_modules=_preferred_modules(p["preferred_modules"]), two_level=bool(p["two_level"]),
                     num_trials=int(p["num_trials"]), behaviour=p["infomap"], env_dir=_infomap_env_dir(call))


def infomap(call: StageCall) -> None:
    """Run Infomap once per seed; write communities (run, node, module) and per-run statistics."""
    edges = read_parquet(call.input["edges"], what="edge list")
    num_nodes = int(load_npy(call.input["matrix"], ndim=2, what="co-occurrence matrix").shape[0])
    preferred_modules = _preferred_modules(call.wildcards["preferred_modules"])
    markov_time = float(call.wildcards["markov_time"])
    seeds = [int(s) for s in call.params["seeds"]]
    runs = [InfomapRun(graph=0, seed=seed, markov_time=markov_time, two_level=bool(call.params["two_level"]),
                       preferred_modules=preferred_modules, num_trials=int(call.params["num_trials"]))
            for seed in seeds]
    results = run_infomap_runs([edges], num_nodes, runs, behaviour=call.params["infomap"],
                               env_dir=_infomap_env_dir(call))
    runs_out = []
    for seed, res in zip(seeds, results, strict=True):
        runs_out.append((seed, res.module_of, {
            "num_modules": int(res.num_modules), "codelength": float(res.codelength),
            "isolated_nodes": len(res.isolated), "infomap_version": res.version, "infomap": res.behaviour,
            "markov_time": markov_time,
            "preferred_modules": preferred_modules if preferred_modules is not None else -1}))
        log.info("seed %d: %d modules, %d isolated labels, codelength %.4f (infomap %s, %s)",
                 seed, res.num_modules, len(res.isolated), res.codelength, res.version, res.behaviour)
    write_infomap_runs(call.output, runs_out)


def write_infomap_runs(output: Mapping[str, str], runs: Sequence[tuple[int, np.ndarray, dict[str, Any]]]) -> None:
    """The two Infomap artefacts of a +CD row from ``(seed, module_of (L,), statistics)`` per run:
    ``communities`` (seed, node, module int32) and ``runs`` (seed, then the statistics in order)."""
    write_parquet(output["communities"], pd.concat(
        [pd.DataFrame({"seed": seed, "node": np.arange(len(module_of)),
                       "module": np.asarray(module_of).astype(np.int32)}) for seed, module_of, _ in runs],
        ignore_index=True))
    write_parquet(output["runs"], pd.DataFrame([{"seed": seed, **stats} for seed, _, stats in runs]))


def cd_score(call: StageCall) -> Sidecars:
    """Merge val labels into communities (0 = isolated label) per run; Hungarian mIoU per run."""
    comms = read_parquet(call.input["communities"], what="communities")
    im_runs = read_parquet(call.input["runs"], what="Infomap runs")
    labels = load_npy(call.input["labels"], ndim=3, dtype_kind="iu", what="label map")
    gt = load_npy(call.input["gt"], ndim=3, dtype_kind="u", what="ground truth")
    num_classes = int(call.params["num_classes"])
    seeds = sorted(comms["seed"].unique().tolist())
    per_run = []
    with npy_writer(call.output["merged"], (len(seeds), *labels.shape), np.int16) as merged:
        for r, seed in enumerate(seeds):
            part = comms[comms["seed"] == seed].sort_values("node")
            module_of = part["module"].to_numpy(dtype=np.int64)
            merged_r = merge_labels(np.asarray(labels), module_of)
            merged[r] = merged_r
            n_labels = int(module_of.max()) + 1
            if n_labels > num_classes:
                msg = (f"seed {seed}: Infomap found {n_labels - 1} modules (+ label 0 for isolated "
                       f"labels) for {num_classes} classes")
                if call.params["too_many_modules"] == "fail":
                    raise LeopartError(f"{msg}; set cd.too_many_modules: unmatched_to_background to score anyway")
                log.warning("%s: unmatched modules are scored as background", msg)
            conf = eval_confusion(merged_r, gt, num_classes, num_pred=max(n_labels, 1))
            rec = match_result_dict(hungarian_miou(conf), conf, "hungarian", call.params.get("class_names"))
            rec.update({"seed": int(seed), "num_modules": int(np.unique(module_of[module_of > 0]).size)})
            per_run.append(rec)
    mious = np.array([r["miou"] for r in per_run])
    record = {
        "miou": float(mious.mean()), "miou_std": float(mious.std()), "runs": per_run,
        "num_runs": len(per_run), "merged_maps": str(call.output["merged"]),
        "infomap": str(im_runs["infomap"].iloc[0]), "infomap_version": str(im_runs["infomap_version"].iloc[0]),
    }
    write_json(call.output["metrics"], record)
    log.info("+CD mIoU = %.2f ± %.2f %% over %d runs", record["miou"], record["miou_std"], len(per_run))
    return {"metrics": {}}


def cd_search(call: StageCall) -> Sidecars:
    """Grid search of (weight threshold, markov time) on the train split with train GT (spec §8.6)."""
    p = call.params
    labels = load_npy(call.input["labels"], ndim=3, dtype_kind="iu", what="label map")
    gt = load_npy(call.input["gt"], ndim=3, dtype_kind="u", what="ground truth")
    matrix = np.asarray(load_npy(call.input["matrix"], ndim=2, dtype_kind="f", what="co-occurrence matrix"))
    num_classes = int(p["num_classes"])
    label_conf = eval_confusion(labels, gt, num_classes, num_pred=matrix.shape[0])
    results = _search_grid(call, matrix, label_conf)
    write_parquet(call.output["results"], results.drop(columns="module_of"))
    best = best_setting(results)
    write_json(call.output["best"], {
        "best": best, "split": "train", "infomap": str(p["infomap"]),
        "infomap_version": str(results["infomap_version"].iloc[0]),
        "selected_by": "mean train mIoU (Hungarian, train GT) over the Infomap seeds",
    })
    log.info("best on train: weight threshold %g, markov time %g -> %.2f ± %.2f %% (%.1f modules, %.1f isolated)",
             best["weight_threshold"], best["markov_time"], best["miou"], best["miou_std"],
             best["num_modules"], best["isolated_labels"])
    return {"best": {}}


def cd_label_free(call: StageCall) -> Sidecars:
    """Row +CD with the CD setting chosen without labels (:mod:`leopart.label_free`).

    Every ``(weight threshold, markov time)`` of ``cd.search`` is run with every Infomap seed on the
    co-occurrence graph (the graph of the +CD row; no ground truth is read); the setting with the
    highest mean modularity is kept (``selection``), its runs are written as the ``infomap`` rule
    writes them (``edges``, ``communities``, ``runs``) and scored on val exactly as :func:`cd_score`
    (``merged``, ``metrics``; NaN mIoU without masks).
    """
    from leopart.label_free import best_setting_label_free

    p = call.params
    matrix = np.asarray(load_npy(call.input["matrix"], ndim=2, dtype_kind="f", what="co-occurrence matrix"))
    preferred = _preferred_modules(p["preferred_modules"])
    results = _search_grid(call, matrix, None)
    write_parquet(call.output["results"], results.drop(columns="module_of"))
    best = best_setting_label_free(results)
    wt, mt = best["weight_threshold"], best["markov_time"]
    write_json(call.output["selection"], {
        "best": best, "infomap": str(p["infomap"]), "infomap_version": str(results["infomap_version"].iloc[0]),
        "selected_by": "mean modularity (over the Infomap seeds) of the partition on the co-occurrence graph; "
                       "no ground truth read",
    })
    write_parquet(call.output["edges"], edge_list(matrix, wt))
    chosen = results[(results["weight_threshold"] == wt) & (results["markov_time"] == mt)]
    write_infomap_runs(call.output, [
        (int(r.seed), np.asarray(r.module_of), {
            "num_modules": int(r.num_modules), "codelength": float(r.codelength),
            "isolated_nodes": int(r.isolated_labels), "infomap_version": r.infomap_version, "infomap": r.infomap,
            "markov_time": mt, "weight_threshold": wt,
            "preferred_modules": preferred if preferred is not None else -1})
        for r in chosen.itertuples()])
    cd_score(StageCall(input={"communities": call.output["communities"], "runs": call.output["runs"],
                              "labels": call.input["labels"], "gt": call.input["gt"]},
                       output={"merged": call.output["merged"], "metrics": call.output["metrics"]},
                       params={"num_classes": p["num_classes"], "class_names": p["class_names"],
                               "too_many_modules": p["too_many_modules"]}))
    log.info("label-free CD setting: weight threshold %g, markov time %g (modularity %.4f, %.1f modules)",
             wt, mt, best["modularity"], best["num_modules"])
    # one JSON output carries the job's provenance (it checksums selection.json and every other
    # output as final); a second JSON record would checksum this one before its record was added
    return {"metrics": {"weight_threshold": wt, "markov_time": mt,
                        "selection": str(call.output["selection"])}}

"""Stages of the clustering family: k-means on val / train+val tokens, fg k-means, scoring."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from leopart.cluster.kmeans import KMeansParams, eval_block_weights, fg_kmeans as run_fg_kmeans, kmeans
from leopart.errors import LeopartError
from leopart.evaluate import score
from leopart.io import load_npy, provenance, save_npy, sidecar_path, write_json
from leopart.stages.runner import params_of

log = logging.getLogger(__name__)


def kmeans_params(smk: Any, k: int, seed: int, spherical: bool) -> KMeansParams:
    """KMeansParams from the rule's ``params.kmeans`` plus k, seed and spherical."""
    cfg = dict(smk.params.kmeans)
    return KMeansParams(k=k, seed=seed, spherical=spherical, niter=cfg["niter"], nredo=cfg["nredo"],
                        max_points_per_centroid=cfg["max_points_per_centroid"],
                        min_points_per_centroid=cfg["min_points_per_centroid"])


def _labels_sidecar(smk: Any, out: str, stage: str, extra: dict[str, Any]) -> None:
    inputs = {name: path for name, path in smk.input.items()}
    write_json(sidecar_path(out), provenance(stage=stage, params=params_of(smk), inputs=inputs, extra=extra))


def overcluster_kmeans(smk: Any) -> None:
    """k-means on val PCA tokens (optionally the first ``val_limit`` images)."""
    val = load_npy(smk.input.val, ndim=4, dtype_kind="f", what="PCA tokens")
    limit = smk.params.val_limit
    if limit is not None:
        if limit > val.shape[0]:
            raise LeopartError(f"config: overcluster.val_limit = {limit} exceeds the {val.shape[0]} val images")
        val = val[:limit]
    n, h, w, d = val.shape
    params = kmeans_params(smk, int(smk.wildcards.k), int(smk.wildcards.seed), bool(smk.params.spherical))
    result = kmeans(np.ascontiguousarray(val.reshape(n * h * w, d), dtype=np.float32), params,
                    key="overcluster.k")
    save_npy(smk.output.labels, result.labels.reshape(n, h, w).astype(np.int32))
    _labels_sidecar(smk, smk.output.labels, "overcluster_kmeans",
                    {"objective": result.objective, "shape": [n, h, w]})


def kmeans_trainval(smk: Any) -> None:
    """k-means on train+val PCA tokens jointly (transductive, spec §5.2); labels per split."""
    train = load_npy(smk.input.train, ndim=4, dtype_kind="f", what="PCA tokens")
    val = load_npy(smk.input.val, ndim=4, dtype_kind="f", what="PCA tokens")
    if train.shape[1:] != val.shape[1:]:
        raise LeopartError(f"{smk.input.train} and {smk.input.val}: token grids differ "
                           f"({train.shape[1:]} vs {val.shape[1:]})")
    _, h, w, d = train.shape
    x = np.concatenate([np.asarray(train).reshape(-1, d), np.asarray(val).reshape(-1, d)]).astype(np.float32, copy=False)
    params = kmeans_params(smk, int(smk.wildcards.k), int(smk.wildcards.seed), bool(smk.params.spherical))
    result = kmeans(x, params, key="cbfe.k")
    del x
    n_train = train.shape[0] * h * w
    for out, labels, n in ((smk.output.train, result.labels[:n_train], train.shape[0]),
                           (smk.output.val, result.labels[n_train:], val.shape[0])):
        save_npy(out, labels.reshape(n, h, w).astype(np.int32))
        present = np.unique(labels).size
        _labels_sidecar(smk, out, "kmeans_trainval",
                        {"objective": result.objective, "clusters_present": int(present)})


def fg_kmeans(smk: Any) -> None:
    """k-means on CBFE foreground tokens weighted as at eval resolution; background label = k."""
    train = load_npy(smk.input.train, ndim=4, dtype_kind="f", what="PCA tokens")
    val = load_npy(smk.input.val, ndim=4, dtype_kind="f", what="PCA tokens")
    fg_train = load_npy(smk.input.train_fg, ndim=3, what="CBFE mask").astype(bool)
    fg_val = load_npy(smk.input.val_fg, ndim=3, what="CBFE mask").astype(bool)
    k = int(smk.wildcards.k)
    params = kmeans_params(smk, k, int(smk.wildcards.seed), False)
    weights = eval_block_weights(train.shape[1:3], int(smk.params.eval_size))
    labels = run_fg_kmeans([train, val], [fg_train, fg_val], weights, params, key="fg_clustering.k / cd.k")
    for out, lab, fg in ((smk.output.train, labels[0], fg_train), (smk.output.val, labels[1], fg_val)):
        save_npy(out, lab.astype(np.int32))
        used = np.unique(lab[fg]).size if fg.any() else 0
        _labels_sidecar(smk, out, "fg_kmeans", {
            "background_label": k, "fg_token_fraction": float(fg.mean()),
            "fg_clusters_present": int(used),
            "note": "token-level labels; eval-resolution map = torch-nearest upsampling",
        })
        if used < k:
            log.warning("%s: only %d of %d foreground clusters occur in this split", out, used, k)


def score_labels(smk: Any) -> None:
    """Score a token-level label map on val against GT (Hungarian or many-to-one)."""
    labels = load_npy(smk.input.labels, ndim=3, dtype_kind="iu", what="label map")
    gt = load_npy(smk.input.gt, ndim=3, dtype_kind="u", what="ground truth")
    limit = smk.params.val_limit
    if limit is not None:
        gt = gt[:limit]
    matching = smk.params.get("matching") or smk.wildcards.get("matching")
    record = score(labels, gt, int(smk.params.num_classes), matching)
    record.update(provenance(stage="score", params=params_of(smk),
                             inputs={"labels": smk.input.labels, "gt": smk.input.gt}))
    write_json(smk.output.metrics, record)
    log.info("%s mIoU = %.2f %%", matching, record["miou"])


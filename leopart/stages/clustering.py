"""Stages of the clustering family: k-means on val / train+val tokens, fg k-means, scoring."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from leopart.errors import LeopartError
from leopart.eval.score import score
from leopart.io import load_npy, save_npy, write_json
from leopart.stages.features import first_val_images
from leopart.stages.runner import Sidecars, StageCall

if TYPE_CHECKING:
    from leopart.cluster.kmeans import KMeansParams

log = logging.getLogger(__name__)


def kmeans_params(cfg: Mapping[str, Any], k: int, seed: int, spherical: bool) -> KMeansParams:
    """KMeansParams from the config's ``kmeans`` section plus k, seed and spherical."""
    from leopart.cluster.kmeans import KMeansParams  # faiss: imported by the k-means stages only

    return KMeansParams(k=k, seed=seed, spherical=spherical, niter=cfg["niter"], nredo=cfg["nredo"],
                        max_points_per_centroid=cfg["max_points_per_centroid"],
                        min_points_per_centroid=cfg["min_points_per_centroid"],
                        device=cfg.get("device", "cpu"))


def overcluster_kmeans(call: StageCall) -> Sidecars:
    """k-means on val PCA tokens (optionally the first ``val_limit`` images)."""
    from leopart.cluster.kmeans import kmeans

    val = load_npy(call.input["val"], ndim=4, dtype_kind="f", what="PCA tokens")
    val = first_val_images(val, call.params["val_limit"])
    n, h, w, d = val.shape
    params = kmeans_params(call.params["kmeans"], int(call.wildcards["k"]), int(call.wildcards["seed"]),
                           bool(call.params["spherical"]))
    result = kmeans(val.reshape(n * h * w, d), params, key="overcluster.k")  # streamed from the memmap
    save_npy(call.output["labels"], result.labels.reshape(n, h, w).astype(np.int32))
    return {"labels": {"objective": result.objective, "shape": [n, h, w]}}


def kmeans_trainval(call: StageCall) -> Sidecars:
    """k-means on train+val PCA tokens jointly (transductive, spec §5.2); labels per split."""
    from leopart.cluster.kmeans import kmeans

    train = load_npy(call.input["train"], ndim=4, dtype_kind="f", what="PCA tokens")
    val = load_npy(call.input["val"], ndim=4, dtype_kind="f", what="PCA tokens")
    if train.shape[1:] != val.shape[1:]:
        raise LeopartError(f"{call.input['train']} and {call.input['val']}: token grids differ "
                           f"({train.shape[1:]} vs {val.shape[1:]})")
    _, h, w, d = train.shape
    params = kmeans_params(call.params["kmeans"], int(call.wildcards["k"]), int(call.wildcards["seed"]),
                           bool(call.params["spherical"]))
    # train and val clustered as one concatenation, streamed from the memmaps (never copied whole)
    result = kmeans([train.reshape(-1, d), val.reshape(-1, d)], params, key="cbfe.k")
    n_train = train.shape[0] * h * w
    sidecars = {}
    for name, labels, n in (("train", result.labels[:n_train], train.shape[0]),
                            ("val", result.labels[n_train:], val.shape[0])):
        save_npy(call.output[name], labels.reshape(n, h, w).astype(np.int32))
        sidecars[name] = {"objective": result.objective, "clusters_present": int(np.unique(labels).size)}
    return sidecars


def fg_kmeans(call: StageCall) -> Sidecars:
    """k-means on CBFE foreground tokens weighted as at eval resolution; background label = k."""
    from leopart.cluster.kmeans import eval_block_weights, fg_kmeans as run_fg_kmeans

    train = load_npy(call.input["train"], ndim=4, dtype_kind="f", what="PCA tokens")
    val = load_npy(call.input["val"], ndim=4, dtype_kind="f", what="PCA tokens")
    fg_train = load_npy(call.input["train_fg"], ndim=3, what="CBFE mask").astype(bool)
    fg_val = load_npy(call.input["val_fg"], ndim=3, what="CBFE mask").astype(bool)
    k = int(call.wildcards["k"])
    params = kmeans_params(call.params["kmeans"], k, int(call.wildcards["seed"]), False)
    weights = eval_block_weights(train.shape[1:3], int(call.params["eval_size"]))
    labels = run_fg_kmeans([train, val], [fg_train, fg_val], weights, params, key="fg_clustering.k / cd.k")
    sidecars = {}
    for name, lab, fg in (("train", labels[0], fg_train), ("val", labels[1], fg_val)):
        out = call.output[name]
        save_npy(out, lab.astype(np.int32))
        used = np.unique(lab[fg]).size if fg.any() else 0
        sidecars[name] = {
            "background_label": k, "fg_token_fraction": float(fg.mean()),
            "fg_clusters_present": int(used),
            "note": "token-level labels; eval-resolution map = torch-nearest upsampling",
        }
        if used < k:
            log.warning("%s: only %d of %d foreground clusters occur in this split", out, used, k)
    return sidecars


def score_labels(call: StageCall) -> Sidecars:
    """Score a token-level label map on val against GT (Hungarian or many-to-one)."""
    labels = load_npy(call.input["labels"], ndim=3, dtype_kind="iu", what="label map")
    gt = load_npy(call.input["gt"], ndim=3, dtype_kind="u", what="ground truth")
    limit = call.params["val_limit"]
    if limit is not None:
        gt = gt[:limit]
    matching = call.params["matching"]
    record = score(labels, gt, int(call.params["num_classes"]), matching,
                   class_names=call.params.get("class_names"))
    write_json(call.output["metrics"], record)
    log.info("%s mIoU = %.2f %%", matching, record["miou"])
    return {"metrics": {}}

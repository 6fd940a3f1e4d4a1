"""Stage: cluster-based foreground extraction (spec §7) with its audit artefacts."""

from __future__ import annotations

import logging

import numpy as np

from leopart.cbfe import cbfe as run_cbfe
from leopart.cluster.kmeans import eval_block_weights
from leopart.errors import LeopartError
from leopart.io import load_npy, save_npy, write_json, write_parquet
from leopart.metrics import per_image_fg_iou
from leopart.resample import upsample_labels
from leopart.stages.runner import Sidecars, StageCall

log = logging.getLogger(__name__)


def _fg_iou(gt: np.ndarray, fg_tokens: np.ndarray, size: int) -> float:
    """Mean per-image fg IoU of token masks upsampled to ``size`` (255 counts as fg)."""
    return per_image_fg_iou(gt, upsample_labels(fg_tokens.astype(np.uint8), size).astype(bool))


def cbfe(call: StageCall) -> Sidecars:
    """Foreground masks per split (token resolution), per-cluster table, threshold record."""
    inp, p = call.input, call.params
    lab_tr = load_npy(inp["train_labels"], ndim=3, dtype_kind="iu", what="cluster labels")
    lab_va = load_npy(inp["val_labels"], ndim=3, dtype_kind="iu", what="cluster labels")
    att_tr = load_npy(inp["train_attn"], ndim=3, what="attention masks")
    att_va = load_npy(inp["val_attn"], ndim=3, what="attention masks")
    label_free = bool(p.get("label_free", False))
    has_labels = bool(p.get("has_labels", True))
    gt_tr = load_npy(inp["train_gt"], ndim=3, dtype_kind="u", what="ground truth") if has_labels else None
    for lab, att, path in ((lab_tr, att_tr, inp["train_attn"]), (lab_va, att_va, inp["val_attn"])):
        if lab.shape != att.shape:
            raise LeopartError(f"{path}: attention masks have shape {att.shape} but the clustered "
                               f"tokens have {lab.shape} (same images and token grid needed)")
    k = int(call.wildcards["cbfe_k"])
    size = int(p["eval_size"])
    weights = eval_block_weights(lab_tr.shape[1:], size)
    lo, hi = p["cut_range"]
    result = run_cbfe(np.asarray(lab_tr), np.asarray(lab_va), np.asarray(att_tr).astype(bool),
                      np.asarray(att_va).astype(bool), None if gt_tr is None else np.asarray(gt_tr), k, weights,
                      eval_size=size, threshold=p["threshold"], cut_fractions=(lo, hi), round_step=p["round_step"],
                      label_free=label_free)
    save_npy(call.output["train_fg"], result.fg_train.astype(np.uint8))
    save_npy(call.output["val_fg"], result.fg_val.astype(np.uint8))
    write_parquet(call.output["clusters"], result.table)
    search = result.search
    record = {
        "threshold": result.threshold,
        "searched": search is not None,
        "selected_by": ("fixed cbfe.threshold" if search is None else
                        "label-free: Otsu on the train cluster precisions" if label_free else
                        "train ground truth (mean per-image fg IoU)"),
        # without masks there is nothing to measure against (null, not a number from all-255 GT)
        "train_fg_iou": _fg_iou(np.asarray(gt_tr), result.fg_train, size) if gt_tr is not None else None,
        "train_attention_fg_iou": (_fg_iou(np.asarray(gt_tr), np.asarray(att_tr).astype(bool), size)
                                   if gt_tr is not None else None),
        "fg_clusters_train": int(result.table["fg_train"].sum()),
        "fg_clusters_val": int(result.table["fg_val"].sum()),
        "fg_token_fraction": {"train": float(result.fg_train.mean()), "val": float(result.fg_val.mean())},
    }
    if search is not None:
        record.update({"score_name": ("between-group variance of the precisions (Otsu)" if label_free
                                      else "mean per-image fg IoU (train)"),
                       "raw_threshold": search.raw_threshold, "best_cut": search.best_cut,
                       "cuts": search.cuts, "cut_scores": search.scores})
    write_json(call.output["threshold"], record)
    log.info("CBFE threshold %.2f (%s): %d/%d train fg clusters, train fg IoU %s (attention alone %s)",
             result.threshold, record["selected_by"], record["fg_clusters_train"], k, record["train_fg_iou"],
             record["train_attention_fg_iou"])
    mask_record = {"threshold_record": str(call.output["threshold"]),
                   "note": "token-resolution mask; eval map = torch-nearest upsampling"}
    return {"threshold": {}, "train_fg": mask_record, "val_fg": mask_record}

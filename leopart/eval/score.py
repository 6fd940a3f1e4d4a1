"""Scoring of token-level label maps against ground truth at the evaluation resolution.

Label maps are stored at token resolution ``(N, h, w)``; the authors evaluate at ``eval_size``²
after torch-legacy-nearest upsampling (spec §5.4). :func:`eval_confusion` upsamples a chunk of
images at a time and accumulates the confusion matrix, so the ``(N, 100, 100)`` prediction is never
materialised as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from leopart.errors import LeopartError
from leopart.metrics import MatchResult, confusion_matrix, hungarian_miou, many_to_one_miou
from leopart.resample import upsample_labels

log = logging.getLogger(__name__)

MATCHINGS = {"hungarian": hungarian_miou, "many_to_one": many_to_one_miou}


def eval_confusion(
    labels: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    num_pred: int | None = None,
    images_per_chunk: int = 256,
) -> np.ndarray:
    """Confusion matrix of token labels upsampled to the GT resolution.

    Args:
        labels: ``(N, h, w)`` integer predictions at token resolution (non-negative).
        gt: ``(N, S, S)`` uint8 ground truth at evaluation resolution (255 = ignore).
        num_classes: number of GT classes ``C``.
        num_pred: number of prediction labels ``P`` (default: ``labels.max() + 1``).
        images_per_chunk: images upsampled at once.

    Returns:
        ``(C, P)`` int64 pixel counts over valid (non-255) pixels.
    """
    if labels.shape[0] != gt.shape[0]:
        raise LeopartError(
            f"labels cover {labels.shape[0]} images but the ground truth has {gt.shape[0]}"
        )
    if num_pred is None:
        num_pred = int(np.max(labels)) + 1 if labels.size else 1
    conf = np.zeros((num_classes, num_pred), dtype=np.int64)
    size = gt.shape[1:]
    for start in range(0, labels.shape[0], images_per_chunk):
        stop = min(start + images_per_chunk, labels.shape[0])
        up = upsample_labels(np.asarray(labels[start:stop]), size)
        conf += confusion_matrix(np.asarray(gt[start:stop]), up, num_classes, num_pred)
    return conf


def match_result_dict(
    result: MatchResult, conf: np.ndarray, matching: str, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """A JSON-ready record of one scored clustering: mIoU in % over the ``classes`` present in the
    GT (NaN when none is), per-class IoU in % (NaN for classes absent from the GT), label mapping.

    With ``class_names`` (``C`` names in label-index order) the record also holds them and
    ``iou_by_class`` (name -> IoU in %), so that per-class results can be read without the index.
    """
    if class_names is not None and len(class_names) != conf.shape[0]:
        raise LeopartError(f"{len(class_names)} class names for a confusion matrix of {conf.shape[0]} classes")
    record = {
        "matching": matching,
        "miou": float(result.miou) * 100.0,
        "classes": result.classes_present,
        "iou_per_class": [float(v) * 100.0 for v in result.iou],
        "mapping": [int(v) for v in result.mapping],
        "num_pred_labels": int(conf.shape[1]),
        "pred_labels_used": int(np.count_nonzero(conf.sum(axis=0))),
        "valid_pixels": int(conf.sum()),
    }
    if class_names is not None:
        record["class_names"] = [str(c) for c in class_names]
        record["iou_by_class"] = dict(zip(record["class_names"], record["iou_per_class"], strict=True))
    return record


def score(
    labels: np.ndarray, gt: np.ndarray, num_classes: int, matching: str, num_pred: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score token labels against GT with ``matching`` ∈ {hungarian, many_to_one}; ``class_names``
    as in :func:`match_result_dict`."""
    if matching not in MATCHINGS:
        raise LeopartError(f"matching {matching!r} is not one of {sorted(MATCHINGS)}")
    conf = eval_confusion(labels, gt, num_classes, num_pred)
    warn_if_all_ignored(conf)
    return match_result_dict(MATCHINGS[matching](conf), conf, matching, class_names)


def warn_if_all_ignored(conf: np.ndarray, what: str = "the ground truth") -> bool:
    """Log a warning (and return True) when ``conf`` counts no valid pixel: every GT pixel is 255,
    so there is nothing to score and the mIoU is NaN rather than 0."""
    if int(np.asarray(conf).sum()) == 0:
        log.warning("%s has no valid pixel (every pixel is 255 = ignore): mIoU is NaN", what)
        return True
    return False

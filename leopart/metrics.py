"""Segmentation metrics of the authors' ``PredsmIoU`` and ``eval_jac`` (spec §6).

All dataset-level metrics are computed from one confusion matrix ``conf[c, p]`` = number of valid
pixels (GT != ignore) with ground-truth class ``c`` and predicted label ``p``. The authors build
their IoU score matrix with joblib, scanning the full pixel vector once per ``(c, p)`` pair; every
entry of that matrix is a ratio of the integer counts held in ``conf``, so the numbers are
identical (spec §6.3) while the cost drops from ``C·P`` full scans to one ``bincount``.

Matching never remaps pixels: the remapped confusion matrix is ``conf @ onehot(mapping)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leopart.errors import LeopartError

__all__ = [
    "MatchResult",
    "confusion",
    "confusion_matrix",
    "hungarian_miou",
    "many_to_one_miou",
    "miou_from_mapping",
    "per_image_fg_iou",
]


@dataclass(frozen=True)
class MatchResult:
    """Result of matching predicted labels to ground-truth classes.

    Attributes:
        miou: mean IoU over the ground-truth classes *present* (at least one valid GT pixel); a
            present class never predicted scores 0; NaN when no class is present (all-ignore GT).
            On PVOC val every one of the 21 classes is present, so this is the paper's mean.
        iou: ``(C,)`` float64 per-class IoU after remapping; NaN for classes absent from the GT.
        mapping: ``(P,)`` int64, ``mapping[p]`` = GT class that predicted label ``p`` is mapped to.
    """

    miou: float
    iou: np.ndarray
    mapping: np.ndarray

    @property
    def classes_present(self) -> int:
        """Number of ground-truth classes the mean runs over (non-NaN entries of ``iou``)."""
        return int(np.count_nonzero(~np.isnan(self.iou)))


def confusion_matrix(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    num_pred: int | None = None,
    ignore_index: int = 255,
    chunk: int = 2**24,
) -> np.ndarray:
    """Confusion matrix of ground truth vs predicted labels over the valid pixels.

    The arrays are processed in flat chunks of ``chunk`` pixels, so no int64 copy of the whole
    input is made (inputs may be memmaps of ~14.5 M pixels).

    Args:
        gt: ground-truth class indices, any shape (typically ``(N, H, W)`` uint8); pixels equal to
            ``ignore_index`` are dropped (from the prediction as well).
        pred: integer predicted labels, same shape as ``gt``.
        num_classes: number of GT classes ``C``; GT values must lie in ``0..C-1`` or be ignored.
        num_pred: number of predicted labels ``P``; defaults to ``pred.max() + 1``. Predicted
            labels must lie in ``0..P-1``.
        ignore_index: GT value marking pixels to ignore.
        chunk: pixels per chunk.

    Returns:
        ``(C, P)`` int64 matrix, ``conf[c, p]`` = number of valid pixels with GT ``c`` and
        prediction ``p``.

    Raises:
        LeopartError: mismatched shapes, non-integer predictions, GT values ``>= C`` (other than
            ``ignore_index``), negative predictions or predictions ``>= num_pred``.
    """
    gt = np.asarray(gt) if not isinstance(gt, np.ndarray) else gt
    pred = np.asarray(pred) if not isinstance(pred, np.ndarray) else pred
    if gt.shape != pred.shape:
        raise LeopartError(f"confusion matrix: ground truth shape {gt.shape} != prediction shape {pred.shape}")
    if gt.dtype.kind not in "iub" or pred.dtype.kind not in "iub":
        raise LeopartError(
            f"confusion matrix: labels must be integers, got GT {gt.dtype} and prediction {pred.dtype}"
        )
    if num_classes < 1:
        raise LeopartError(f"confusion matrix: num_classes must be >= 1, got {num_classes}")
    if num_pred is None:
        num_pred = int(pred.max()) + 1 if pred.size else 1
    if num_pred < 1:
        raise LeopartError(f"confusion matrix: num_pred must be >= 1, got {num_pred}")
    c, p = int(num_classes), int(num_pred)
    gt_flat = gt.reshape(-1)
    pred_flat = pred.reshape(-1)
    conf = np.zeros(c * p, dtype=np.int64)
    chunk = max(int(chunk), 1)
    for start in range(0, gt_flat.size, chunk):
        g = np.asarray(gt_flat[start : start + chunk])
        q = np.asarray(pred_flat[start : start + chunk])
        valid = g != ignore_index
        g = g[valid]
        q = q[valid]
        if g.size == 0:
            continue
        g_max = int(g.max())
        if g_max >= c or int(g.min()) < 0:
            raise LeopartError(
                f"confusion matrix: ground truth contains label {g_max if g_max >= c else int(g.min())}"
                f" outside 0..{c - 1} (and ignore {ignore_index})"
            )
        q_min, q_max = int(q.min()), int(q.max())
        if q_min < 0:
            raise LeopartError(f"confusion matrix: prediction contains negative label {q_min}")
        if q_max >= p:
            raise LeopartError(f"confusion matrix: prediction label {q_max} >= num_pred={p}")
        key = g.astype(np.int64)
        key *= p
        key += q
        conf += np.bincount(key, minlength=c * p)
    return conf.reshape(c, p)


#: Alias used in docs/architecture.md.
confusion = confusion_matrix


def _iou_from_conf(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU of a square remapped confusion matrix ``(C, C)`` (rows = GT classes); NaN
    for a class without GT pixels (row sum 0), whatever was predicted as it."""
    tp = np.diag(conf).astype(np.float64)
    gt_pixels = conf.sum(axis=1)
    denom = gt_pixels + conf.sum(axis=0) - np.diag(conf)
    out = np.full(conf.shape[0], np.nan, dtype=np.float64)
    np.divide(tp, denom, out=out, where=gt_pixels > 0)
    return out


def miou_from_mapping(conf: np.ndarray, mapping: np.ndarray) -> MatchResult:
    """Remap predicted labels with ``mapping`` (``(P,)`` → class) and score per-class IoU.

    The remapped confusion is ``conf @ onehot(mapping)`` (``(C, C)``); pixels are never touched.

    Args:
        conf: ``(C, P)`` confusion matrix from :func:`confusion_matrix`.
        mapping: ``(P,)`` integer GT class for each predicted label.
    """
    conf = np.asarray(conf, dtype=np.int64)
    mapping = np.asarray(mapping, dtype=np.int64)
    c, p = conf.shape
    if mapping.shape != (p,):
        raise LeopartError(f"mapping has shape {mapping.shape}, expected ({p},)")
    if p and (mapping.min() < 0 or mapping.max() >= c):
        raise LeopartError(f"mapping targets must lie in 0..{c - 1}")
    onehot = np.zeros((p, c), dtype=np.int64)
    onehot[np.arange(p), mapping] = 1
    remapped = conf @ onehot
    iou = _iou_from_conf(remapped)
    present = ~np.isnan(iou)
    miou = float(iou[present].mean()) if present.any() else float("nan")
    return MatchResult(miou=miou, iou=iou, mapping=mapping)


def hungarian_miou(conf: np.ndarray) -> MatchResult:
    """One-to-one (Hungarian) matching and mIoU (spec §6.1).

    ``A[c, p] = IoU(GT == c, pred == p)`` (0 where the union is empty);
    ``scipy.optimize.linear_sum_assignment(1 - A)`` with GT classes as rows. Matched labels map to
    their class; unmatched labels (only when ``P > C``) map to class 0. Per-class IoU is computed
    from the remapped confusion; mIoU is the mean over the classes present in the GT
    (:class:`MatchResult`).

    Args:
        conf: ``(C, P)`` confusion matrix.

    Returns:
        :class:`MatchResult` with ``mapping`` of shape ``(P,)``.
    """
    conf = np.asarray(conf, dtype=np.int64)
    if conf.ndim != 2:
        raise LeopartError(f"confusion matrix must be 2-D, got shape {conf.shape}")
    gt_tot = conf.sum(axis=1, keepdims=True)
    pred_tot = conf.sum(axis=0, keepdims=True)
    union = gt_tot + pred_tot - conf
    score = np.zeros(conf.shape, dtype=np.float64)
    np.divide(conf, union, out=score, where=union > 0)
    from scipy.optimize import linear_sum_assignment  # scipy.optimize costs ~0.5 s to import

    rows, cols = linear_sum_assignment(1.0 - score)
    mapping = np.zeros(conf.shape[1], dtype=np.int64)
    mapping[cols] = rows
    return miou_from_mapping(conf, mapping)


def many_to_one_miou(conf: np.ndarray) -> MatchResult:
    """Many-to-one, precision-based matching and mIoU (spec §6.2).

    Each predicted label ``p`` maps to ``argmax_c conf[c, p]`` (= argmax of the precision
    ``conf[c, p] / |pred == p|``); ties go to the lowest class, a label without valid pixels maps
    to class 0. Then scored as :func:`hungarian_miou`.

    Args:
        conf: ``(C, P)`` confusion matrix.
    """
    conf = np.asarray(conf, dtype=np.int64)
    if conf.ndim != 2:
        raise LeopartError(f"confusion matrix must be 2-D, got shape {conf.shape}")
    mapping = np.argmax(conf, axis=0).astype(np.int64)  # all-zero column -> 0
    return miou_from_mapping(conf, mapping)


def _nanmean_rows(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Row-wise mean of ``num / den`` over the entries with ``den > 0`` (NaN if there are none).

    ``num``/``den``: ``(R, N)``. Shared by :func:`per_image_fg_iou` and the CBFE threshold search
    so both average in exactly the same order.
    """
    num = np.ascontiguousarray(num, dtype=np.float64)
    den = np.ascontiguousarray(den, dtype=np.float64)
    valid = den > 0
    ratio = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=ratio, where=valid)
    count = valid.sum(axis=-1)
    total = ratio.sum(axis=-1)
    out = np.full(total.shape, np.nan, dtype=np.float64)
    np.divide(total, count, out=out, where=count > 0)
    return out


def per_image_fg_iou(gt: np.ndarray, pred_fg: np.ndarray) -> float:
    """Mean over images of the foreground IoU (the authors' ``eval_jac``, spec §6.3).

    Ground-truth foreground is ``gt != 0``: the 255 boundary/ignore label counts as foreground
    ("with_boundary=True").

    Choice: images whose union is empty (no GT foreground and no predicted foreground) are
    skipped (NaN-mean); the authors' code would return NaN for the whole mean in that case. The
    result is NaN only if every image has an empty union.

    Args:
        gt: ``(N, H, W)`` uint8 ground truth.
        pred_fg: ``(N, H, W)`` bool predicted foreground.

    Returns:
        Mean per-image IoU in ``[0, 1]`` (float).
    """
    gt = np.asarray(gt)
    pred_fg = np.asarray(pred_fg, dtype=bool)
    if gt.shape != pred_fg.shape or gt.ndim != 3:
        raise LeopartError(
            f"per-image fg IoU: ground truth {gt.shape} and prediction {pred_fg.shape} must both be (N, H, W)"
        )
    fg = gt != 0
    inter = np.count_nonzero(fg & pred_fg, axis=(1, 2))
    union = np.count_nonzero(fg | pred_fg, axis=(1, 2))
    return float(_nanmean_rows(inter[None], union[None])[0])

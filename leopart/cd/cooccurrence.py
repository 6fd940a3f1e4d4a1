"""Label co-occurrence matrix and graph edges for community detection (spec §8.3–8.4).

The authors (``create_matrix``) call ``skimage.feature.greycomatrix(labels, distances=[1, 2],
angles=[0, π/4, π/2, 3π/4, π, 4π/3, 3π/2, 7π/4], levels=L)`` per image, sum over distances and
angles, zero the diagonal, row-normalise and average the normalised rows over the images in which
the label has any off-diagonal neighbour. skimage turns every (distance d, angle θ) into the pixel
offset ``(round(sin θ · d), round(cos θ · d))`` with C rounding (half away from zero); with those
angles the 16 pairs give the offsets hard-coded in :data:`OFFSETS` (the diagonal angles at d = 2
collapse onto d = 1, and ``4π/3`` — probably meant as ``5π/4`` — gives ``(-2, -1)`` at d = 2).
The table is tested against ``skimage.feature.graycomatrix`` in ``tests/test_cooccurrence.py``.

Everything is vectorised with slicing + ``np.bincount``; a chunk of images is counted with one
``bincount`` over ``image · L² + i · L + j``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from leopart.errors import LeopartError

__all__ = [
    "OFFSET_DISTANCES",
    "OFFSET_ANGLES",
    "OFFSETS",
    "glcm_counts",
    "cooccurrence",
    "edge_list",
]

#: Distances passed to ``greycomatrix`` by the authors (pixels).
OFFSET_DISTANCES: tuple[int, ...] = (1, 2)

#: Angles passed to ``greycomatrix`` by the authors (radians; note ``4π/3``, not ``5π/4``).
OFFSET_ANGLES: tuple[float, ...] = (
    0.0,
    math.pi / 4,
    math.pi / 2,
    3 * math.pi / 4,
    math.pi,
    4 * math.pi / 3,
    3 * math.pi / 2,
    7 * math.pi / 4,
)

#: The 16 ``(row, col)`` offsets skimage uses for ``OFFSET_DISTANCES × OFFSET_ANGLES``, in its
#: ``(distance, angle)`` order: first the 8 angles at d = 1, then the 8 angles at d = 2.
#: ``offset = (round(sin θ · d), round(cos θ · d))``; duplicates are intentional (they are counted
#: twice, as in the original).
OFFSETS: tuple[tuple[int, int], ...] = (
    # d = 1: 0, π/4, π/2, 3π/4, π, 4π/3, 3π/2, 7π/4
    (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1),
    # d = 2
    (0, 2), (1, 1), (2, 0), (1, -1), (0, -2), (-2, -1), (-2, 0), (-1, 1),
)  # fmt: skip


_BINS_PER_BINCOUNT = 1 << 18


def _slices(dr: int, dc: int, h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Source and destination windows for offset ``(dr, dc)``; ``None`` if nothing fits."""
    r0, r1 = max(0, -dr), h - max(0, dr)
    c0, c1 = max(0, -dc), w - max(0, dc)
    if r1 <= r0 or c1 <= c0:
        return None
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 + dr, r1 + dr), slice(c0 + dc, c1 + dc))


def _check_labels(labels: np.ndarray, num_labels: int, what: str) -> None:
    if labels.dtype.kind not in "iu":
        raise LeopartError(f"{what}: label maps must be integers, found dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
        raise LeopartError(
            f"{what}: labels must lie in 0..{num_labels - 1}, found {labels.min()}..{labels.max()}"
        )


def _batch_counts(
    labels: np.ndarray, num_labels: int, offsets: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Co-occurrence counts of a batch ``(B, H, W)`` → ``(B, L, L)`` int64 (summed over offsets)."""
    b, h, w = labels.shape
    L = num_labels
    lab = labels.astype(np.int64, copy=False)
    # base[k, r, c] = k·L² + L·label — the destination label is added per offset
    base = lab * L + (np.arange(b, dtype=np.int64) * (L * L))[:, None, None]
    windows = [s for s in (_slices(dr, dc, h, w) for dr, dc in offsets) if s is not None]
    sizes = [b * (src[0].stop - src[0].start) * (src[1].stop - src[1].start) for src, _ in windows]
    keys = np.empty(sum(sizes), dtype=np.int64)
    pos = 0
    for (src, dst), n in zip(windows, sizes, strict=True):
        out = keys[pos : pos + n].reshape(b, src[0].stop - src[0].start, src[1].stop - src[1].start)
        np.add(base[:, src[0], src[1]], lab[:, dst[0], dst[1]], out=out)
        pos += n
    return np.bincount(keys, minlength=b * L * L).reshape(b, L, L)


def glcm_counts(
    labels: np.ndarray, num_labels: int, offsets: Sequence[tuple[int, int]] = OFFSETS
) -> np.ndarray:
    """Grey-level co-occurrence counts of one label image, summed over ``offsets``.

    Args:
        labels: ``(H, W)`` integer label image with values in ``0..num_labels-1``.
        num_labels: ``L`` (skimage ``levels``).
        offsets: ``(row, col)`` pixel offsets.

    Returns:
        ``(L, L)`` int64 ``C`` with ``C[i, j]`` = number of (pixel ``(r, c)`` labelled ``i``, offset
        ``(dr, dc)``) such that ``(r + dr, c + dc)`` lies inside the image and is labelled ``j`` —
        ``graycomatrix(..., symmetric=False, normed=False)`` summed over distances and angles.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise LeopartError(f"labels: expected one (H, W) label image, found shape {labels.shape}")
    _check_labels(labels, num_labels, "labels")
    return _batch_counts(labels[None], num_labels, offsets)[0]


def cooccurrence(
    label_maps: np.ndarray | Sequence[np.ndarray],
    num_labels: int,
    offsets: Sequence[tuple[int, int]] = OFFSETS,
    images_per_chunk: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-image neighbour distribution of every label (authors' ``create_matrix``).

    For every image: co-occurrence counts (:func:`glcm_counts`), zero diagonal, rows normalised to
    sum 1 (all-zero rows stay 0). The normalised matrices are summed over images and every row is
    divided by the number of images in which that row was non-zero.

    Args:
        label_maps: ``(N, H, W)`` integer label maps, or a sequence of such arrays (e.g. the train
            and val memmaps, processed in order without concatenation).
        num_labels: ``L``; labels must lie in ``0..L-1``.
        offsets: pixel offsets (default: the authors' 16, :data:`OFFSETS`).
        images_per_chunk: images read (and validated) at a time; they are counted in batches of
            ``max(1, 2¹⁸ // L²)`` images per ``bincount`` over ``image · L² + i · L + j`` so the
            bins stay cache-sized.

    Returns:
        ``(A, appearances)``: ``A`` ``(L, L)`` float64 with ``A[i, j]`` = mean over images of
        P(offset neighbour has label ``j`` | pixel has label ``i``, neighbour label ≠ ``i``);
        ``appearances`` ``(L,)`` int64, the number of images in which label ``i`` had at least one
        neighbour of another label. Rows of labels with 0 appearances are NaN (0/0, as in the
        original code; NaN never passes the edge threshold in :func:`edge_list`).
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise LeopartError(f"cd: number of labels must be a positive integer, got {num_labels!r}")
    if not isinstance(images_per_chunk, (int, np.integer)) or images_per_chunk < 1:
        raise LeopartError(f"images_per_chunk: must be a positive integer, got {images_per_chunk!r}")
    L = int(num_labels)
    maps = [label_maps] if isinstance(label_maps, np.ndarray) else list(label_maps)
    total = np.zeros((L, L), dtype=np.float64)
    appearances = np.zeros(L, dtype=np.int64)
    diag = np.arange(L)
    # images per bincount: keep the b·L² int64 bins cache-sized (~2 MB); ~2-3x faster than one
    # bincount over a whole chunk of 128 images for L = 150
    sub = max(1, min(int(images_per_chunk), _BINS_PER_BINCOUNT // (L * L)))
    for k, m in enumerate(maps):
        what = str(getattr(m, "filename", None) or f"label_maps[{k}]")
        if m.ndim != 3:
            raise LeopartError(f"{what}: label maps must have shape (N, H, W), found {m.shape}")
        for start in range(0, m.shape[0], images_per_chunk):
            chunk = np.asarray(m[start : start + images_per_chunk])
            _check_labels(chunk, L, what)
            for s in range(0, chunk.shape[0], sub):
                counts = _batch_counts(chunk[s : s + sub], L, offsets)  # (b, L, L)
                counts[:, diag, diag] = 0
                row_sum = counts.sum(axis=2)  # (b, L)
                present = row_sum > 0
                norm = counts / np.where(present, row_sum, 1)[:, :, None]
                total += norm.sum(axis=0)
                appearances += present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = total / appearances[:, None]
    return a, appearances


def edge_list(a: np.ndarray, weight_threshold: float) -> pd.DataFrame:
    """Undirected edges between labels that are each other's frequent neighbours (spec §8.4).

    Args:
        a: ``(L, L)`` co-occurrence matrix from :func:`cooccurrence` (NaN rows allowed).
        weight_threshold: ``wt``; edge ``(i, j)``, ``i < j``, iff ``A[i, j] ≥ wt`` and
            ``A[j, i] ≥ wt`` (NaN never passes).

    Returns:
        DataFrame with columns ``source`` (int64), ``target`` (int64), ``weight`` (float64,
        ``min(A[i, j], A[j, i])``), rows in ``(source, target)`` row-major order — the insertion
        order of the authors' double loop.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise LeopartError(f"cd: co-occurrence matrix must be square, found shape {a.shape}")
    wt = float(weight_threshold)
    if not np.isfinite(wt):
        raise LeopartError(f"cd.weight_threshold: must be a finite number, got {weight_threshold!r}")
    with np.errstate(invalid="ignore"):
        passes = a >= wt
    both = np.triu(passes & passes.T, k=1)
    src, dst = np.nonzero(both)
    return pd.DataFrame(
        {
            "source": src.astype(np.int64),
            "target": dst.astype(np.int64),
            "weight": np.minimum(a[src, dst], a[dst, src]),
        }
    )

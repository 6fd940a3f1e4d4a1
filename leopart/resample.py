"""Resampling of label maps with the exact index conventions of the authors' code (spec §2.4).

* PyTorch legacy ``F.interpolate(mode="nearest")``: ``src = floor(dst * scale)`` with
  ``scale = in / out`` computed in float32 — e.g. 28→100 maps the first outputs to tokens
  0,0,0,0,1,1,1,1,2,…; 448→100 gives 0,4,8,13,17,22,….
* PIL ``Image.resize(NEAREST)`` samples pixel centres; it is used only for masks → 448².

All label-map functions gather with precomputed index vectors, so they never loop over pixels and
never need torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of PyTorch legacy nearest interpolation from ``n_in`` to ``n_out`` samples.

    Reproduces ATen's ``nearest_idx``: for ``n_out == 2 * n_in`` it is ``i >> 1``, for equal sizes the
    identity, otherwise ``min(floor(i * (float32)(n_in / n_out)), n_in - 1)`` evaluated in float32.

    Returns:
        ``(n_out,)`` int64 array of source indices.
    """
    if n_in <= 0 or n_out <= 0:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    i = np.arange(n_out, dtype=np.int64)
    if n_in == n_out:
        return i
    if n_out == 2 * n_in:
        return i >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(i.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def upsample_labels(labels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize label maps ``(N, h, w)`` (or ``(h, w)``) to ``size`` with torch legacy nearest.

    Returns a new array of the same dtype and shape ``(N, H, W)`` (or ``(H, W)``).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    rows = nearest_indices(labels.shape[-2], out_h)
    cols = nearest_indices(labels.shape[-1], out_w)
    return labels[..., rows[:, None], cols[None, :]]


def pil_nearest_resize(mask: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """PIL nearest resize of a mask image to ``size`` (square if an int), as ``Resize(NEAREST)``."""
    wh = (size, size) if isinstance(size, int) else (size[1], size[0])
    return mask.resize(wh, resample=Image.NEAREST)


def block_counts(n_in: int, n_out: int) -> np.ndarray:
    """How many output samples each input index is replicated to by :func:`nearest_indices`.

    Returns ``(n_in,)`` int64; e.g. 28→100 gives 4,4,3,4,3,… (spec §2.4). Used to weight token
    replication when clustering at the evaluation resolution without materialising it.
    """
    return np.bincount(nearest_indices(n_in, n_out), minlength=n_in).astype(np.int64)


class UpsampledLabels:
    """``(N, S, S)`` label maps upsampled from ``(N, h, w)`` token labels on access, a slice at a time.

    Stands in for ``upsample_labels(labels, size)`` where a consumer reads image slices
    (``maps[a:b]``), e.g. :func:`leopart.cd.cooccurrence.cooccurrence`: the full eval-resolution
    array (``N·S²`` labels, 1.2 GB of int16 for 29k images at 100×100) is never materialised, and
    pages of a memmapped ``labels`` are released after every slice.
    """

    def __init__(self, labels: np.ndarray, size: int | tuple[int, int], dtype: np.dtype | type = np.int16) -> None:
        self.labels = labels
        self.out = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.dtype = np.dtype(dtype)
        self.filename = getattr(labels, "filename", None)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.labels.shape[0]), *self.out)

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, images: slice) -> np.ndarray:
        from leopart.io import release_pages

        if not isinstance(images, slice):
            raise TypeError("UpsampledLabels supports image slices only, e.g. maps[a:b]")
        out = upsample_labels(np.asarray(self.labels[images], dtype=self.dtype), self.out)
        release_pages(self.labels)
        return out

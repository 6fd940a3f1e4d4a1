"""Foreground masks from last-block CLS attention (spec §3.4, §4.3: ``process_attentions``).

Per image: mean over heads → Gaussian blur (torchvision, kernel 7, σ 0.6, reflect padding) →
keep the highest-attention tokens holding ``threshold`` of the attention mass → drop
8-connected foreground components smaller than ``min_component`` tokens (the authors remove
components of ≤ 2 pixels, i.e. ``min_component=3``).

The numerics follow the original torch code (float32 sort / normalise / cumsum, comparison with
``1 - threshold``), so masks match the authors' bit for bit up to sort ties; the sort here is
stable (ties ordered by token index), the original's is not. Connected components are found
with a single :func:`scipy.ndimage.label` call on the whole ``(N, h, w)`` stack with a 3×3×3
structure that is all ones in its middle plane and zero elsewhere (scipy requires size 3 per
axis; this is the ``(1, 3, 3)`` in-plane 8-neighbourhood, never connecting images), which is what
``skimage.measure.label`` does on each ``(1, h, w)`` map in the original.

:func:`load_attention_masks` reads pre-computed masks, including the authors' downloadable
``attn_dino_{train,val}.pt`` (float ``(N, 1, 28, 28)`` with values 0/1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leopart.errors import LeopartError
from leopart.io import load_npy, npy_writer, release_pages

if TYPE_CHECKING:
    import torch

PathLike = str | os.PathLike

__all__ = ["attention_masks", "remove_small_components", "load_attention_masks", "import_attention_masks"]

#: 8-connectivity within each image of an (N, h, w) stack, no connection between images.
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True


def attention_masks(
    cls_attn: np.ndarray | torch.Tensor,
    grid: tuple[int, int] | int,
    threshold: float = 0.65,
    blur_sigma: float = 0.6,
    blur_kernel: int = 7,
    min_component: int = 3,
    batch: int = 512,
) -> np.ndarray:
    """Binary foreground masks from CLS→patch attention.

    Args:
        cls_attn: ``(N, heads, h*w)`` float attention (e.g. the memmapped output of feature
            extraction), tokens row-major over the grid.
        grid: ``(h, w)`` token grid (an int means square).
        threshold: fraction of the (blurred, head-averaged) attention mass kept as foreground:
            a token is foreground iff the cumulative mass of all tokens with lower-or-equal
            attention exceeds ``1 - threshold``. 0.65 for evaluation (§4.3), 0.6 in training.
        blur_sigma: Gaussian σ in tokens; ``0`` disables the blur.
        blur_kernel: odd Gaussian kernel size in tokens (reflect padding, torchvision).
        min_component: foreground components with fewer tokens are removed (3 = the authors'
            "≤ 2 pixels"); ``1`` keeps everything.
        batch: images processed per step (memory bound only; results do not depend on it).

    Returns:
        ``(N, h, w)`` uint8 masks, 1 = foreground.
    """
    import torch
    from torchvision.transforms.functional import gaussian_blur

    h, w = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    shape = tuple(cls_attn.shape)
    if len(shape) != 3 or shape[2] != h * w:
        raise LeopartError(f"cls_attn: expected shape (N, heads, {h}*{w}), got {shape}")
    if not 0.0 < threshold <= 1.0:
        raise LeopartError(f"threshold: must be in (0, 1], got {threshold}")
    if blur_sigma < 0:
        raise LeopartError(f"blur_sigma: must be >= 0, got {blur_sigma}")
    if blur_sigma > 0 and (blur_kernel < 1 or blur_kernel % 2 == 0):
        raise LeopartError(f"blur_kernel: must be a positive odd integer, got {blur_kernel}")
    if blur_sigma > 0 and blur_kernel // 2 >= min(h, w):
        raise LeopartError(
            f"blur_kernel: {blur_kernel} is too large for a {h}x{w} grid (reflect padding needs "
            f"kernel//2 < grid side)"
        )
    if min_component < 1:
        raise LeopartError(f"min_component: must be >= 1, got {min_component}")

    n, heads = shape[0], shape[1]
    fg = np.zeros((n, h, w), dtype=bool)
    for start in range(0, n, max(1, int(batch))):
        stop = min(n, start + max(1, int(batch)))
        chunk = cls_attn[start:stop]
        a = chunk.detach().cpu() if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.asarray(chunk))
        a = a.to(torch.float32)
        if not torch.isfinite(a).all():
            raise LeopartError(f"cls_attn: non-finite values among images {start}..{stop - 1}")
        m = a.reshape(stop - start, heads, h, w).mean(dim=1, keepdim=True)
        if blur_sigma > 0:
            m = gaussian_blur(m, kernel_size=[blur_kernel, blur_kernel], sigma=[blur_sigma, blur_sigma])
        flat = m.reshape(stop - start, h * w)
        val, idx = torch.sort(flat, dim=-1, stable=True)
        val = val / torch.sum(val, dim=-1, keepdim=True)
        keep_sorted = torch.cumsum(val, dim=-1) > (1 - threshold)
        keep = torch.zeros_like(keep_sorted).scatter_(1, idx, keep_sorted)
        fg[start:stop] = keep.reshape(stop - start, h, w).numpy()
    return remove_small_components(fg, min_component).astype(np.uint8)


def remove_small_components(mask: np.ndarray, min_component: int) -> np.ndarray:
    """Remove 8-connected foreground components with fewer than ``min_component`` pixels.

    Args:
        mask: ``(N, h, w)`` boolean/0-1 masks; images are labelled independently (one
            ``ndimage.label`` call whose 3×3×3 structure is non-zero only in its middle plane,
            i.e. the in-plane 8-neighbourhood).
        min_component: minimum component size in pixels that survives.

    Returns:
        ``(N, h, w)`` bool.
    """
    from scipy import ndimage

    fg = np.asarray(mask).astype(bool, copy=False)
    if min_component <= 1 or not fg.any():
        return fg.copy()
    labels, _ = ndimage.label(fg, structure=_IN_PLANE_8)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_component
    keep[0] = False
    return keep[labels]


def open_attention_masks(
    path: PathLike,
    expected_count: int | None = None,
    grid: tuple[int, int] | int | None = None,
) -> np.ndarray:
    """Lazy ``(N, h, w)`` view of a pre-computed mask file (shape checks only, values unread).

    Accepted files:
        ``.npy``: ``(N, h, w)`` or ``(N, 1, h, w)``, any numeric/bool dtype (memory-mapped).
        ``.pt``/``.pth``: a tensor of the same shapes (the authors' ``attn_dino_*.pt`` are float
        ``(N, 1, 28, 28)``), memory-mapped without torch when it is a plain ``torch.save`` file
        (:mod:`leopart.tensorfile`), else read with ``torch.load(weights_only=True)``.

    Args:
        expected_count: required ``N`` (number of images in the split), if given.
        grid: required ``(h, w)`` (an int means square), if given.
    """
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: attention mask file is missing")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = load_npy(p, mmap=True, what="attention masks")
    elif suffix in (".pt", ".pth"):
        arr = _open_pt_masks(p)
    else:
        raise LeopartError(f"{p}: attention masks must be .npy or .pt, not {p.suffix or 'no suffix'}")

    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise LeopartError(f"{p}: attention masks must have shape (N, h, w) or (N, 1, h, w), found {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise LeopartError(f"{p}: attention masks have dtype {arr.dtype}, expected numbers")
    if expected_count is not None and arr.shape[0] != expected_count:
        raise LeopartError(f"{p}: {arr.shape[0]} attention masks, but the split has {expected_count} images")
    if grid is not None:
        gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
        if arr.shape[1:] != (gh, gw):
            raise LeopartError(f"{p}: attention masks are {arr.shape[1]}x{arr.shape[2]}, expected {gh}x{gw}")
    return arr


def _open_pt_masks(p: Path) -> np.ndarray:
    from leopart.tensorfile import TensorView, UnsupportedTensorFile, open_tensor

    try:
        obj: Any = open_tensor(p)
    except (UnsupportedTensorFile, OSError):
        obj = None
    if isinstance(obj, TensorView):
        if obj.bfloat16:
            from leopart.tensorfile import bfloat16_to_float32

            return bfloat16_to_float32(obj.array)
        return obj.array
    if obj is None:
        import torch

        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
            raise LeopartError(f"{p}: cannot read attention masks ({type(exc).__name__})") from None
        if isinstance(obj, torch.Tensor):
            return (obj.float() if obj.dtype == torch.bfloat16 else obj).numpy()
    raise LeopartError(f"{p}: attention mask file holds a {type(obj).__name__}, expected a tensor")


def _checked_chunk(arr: np.ndarray, start: int, stop: int, p: Path) -> np.ndarray:
    """Images ``start:stop`` as uint8 after checking that every value is exactly 0 or 1."""
    part = np.asarray(arr[start:stop])
    ok = (part == 0) | (part == 1)
    if not ok.all():
        bad = np.unique(part[~ok])[:3]
        raise LeopartError(f"{p}: attention masks must be 0/1, found values such as {bad.tolist()}")
    return part.astype(np.uint8)


def load_attention_masks(
    path: PathLike,
    expected_count: int | None = None,
    grid: tuple[int, int] | int | None = None,
) -> np.ndarray:
    """Read pre-computed foreground masks (files as in :func:`open_attention_masks`).

    Values must be exactly 0 or 1.

    Returns:
        ``(N, h, w)`` uint8.
    """
    arr = open_attention_masks(path, expected_count, grid)
    return _checked_chunk(arr, 0, arr.shape[0], Path(path))


def import_attention_masks(
    path: PathLike,
    out_path: PathLike,
    expected_count: int | None = None,
    grid: tuple[int, int] | int | None = None,
    chunk_images: int = 4096,
) -> dict[str, Any]:
    """Convert a mask file to the pipeline's ``(N, h, w)`` uint8 ``.npy``, chunk by chunk.

    Values are checked (exactly 0 or 1) per chunk; resident memory stays at a chunk.

    Returns:
        ``{"shape", "fg_fraction"}``.
    """
    p = Path(path)
    arr = open_attention_masks(p, expected_count, grid)
    n = arr.shape[0]
    fg = 0
    with npy_writer(out_path, tuple(arr.shape), np.uint8) as out:
        for start in range(0, n, max(1, int(chunk_images))):
            stop = min(n, start + max(1, int(chunk_images)))
            part = _checked_chunk(arr, start, stop, p)
            out[start:stop] = part
            fg += int(part.sum(dtype=np.int64))
            release_pages(arr)
    size = int(np.prod(arr.shape))
    return {"shape": [int(s) for s in arr.shape], "fg_fraction": fg / size if size else 0.0}

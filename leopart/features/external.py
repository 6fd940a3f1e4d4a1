"""Pre-computed patch embeddings from an external backbone (spec §4.2, §9.2).

Researchers with their own backbone can skip feature extraction and hand the pipeline a file of
patch embeddings per split. Accepted layouts:

``.npy`` (memory-mapped, never read whole):
    ``(N, h, w, D)`` — the project's token-grid layout, returned as is;
    ``(N, h*w, D)`` — tokens row-major over a *square* grid, reshaped to ``(N, s, s, D)``.
``.pt`` / ``.pth`` (a single tensor, ``torch.load(weights_only=True)``, memory-mapped when the
file allows it):
    ``(N, h*w, D)`` — e.g. the authors' ``all_pascal_{train,val}.pt`` ((1464|1449, 784, 50)
    float32, PCA-reduced tokens), square grid required;
    ``(N, D, h, w)`` — PyTorch channels-first feature maps, transposed to ``(N, h, w, D)``.
    A 4-D ``.pt`` tensor that looks channels-last (``shape[1] == shape[2] != shape[3]``) is
    refused as ambiguous: save ``(N, h, w, D)`` arrays as ``.npy`` instead.

Floating dtypes other than float32 are converted to float32 (which reads the data into memory).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from leopart.errors import LeopartError
from leopart.io import load_npy

PathLike = str | os.PathLike

__all__ = ["load_embeddings"]


def load_embeddings(path: PathLike, expected_count: int | None = None) -> np.ndarray:
    """Load pre-computed patch embeddings as an ``(N, h, w, D)`` float32 array.

    Args:
        path: ``.npy`` or ``.pt``/``.pth`` file (layouts in the module docstring).
        expected_count: number of images ``N`` of the split the embeddings belong to, if known.

    Returns:
        ``(N, h, w, D)`` float32 (a read-only memmap view for float32 ``.npy`` input).

    Raises:
        LeopartError naming the file: missing/unreadable file, wrong rank or dtype, token count
        that is not a square, ``N`` different from ``expected_count``.
    """
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: embeddings file is missing")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = load_npy(p, mmap=True, dtype_kind="f", what="embeddings")
        if arr.ndim == 3:
            arr = _square(arr, p)
        elif arr.ndim != 4:
            raise LeopartError(f"{p}: .npy embeddings must be (N, h, w, D) or (N, h*w, D), found shape {arr.shape}")
    elif suffix in (".pt", ".pth"):
        t = _load_tensor(p)
        if t.ndim == 3:
            arr = _square(t.numpy(), p)
        elif t.ndim == 4:
            if t.shape[1] == t.shape[2] and t.shape[3] != t.shape[2]:
                raise LeopartError(
                    f"{p}: 4-D .pt embeddings must be channels-first (N, D, h, w); shape "
                    f"{tuple(t.shape)} looks like (N, h, w, D) — save that layout as .npy"
                )
            arr = t.numpy().transpose(0, 2, 3, 1)
        else:
            raise LeopartError(f"{p}: .pt embeddings must be (N, h*w, D) or (N, D, h, w), found shape {tuple(t.shape)}")
    else:
        raise LeopartError(f"{p}: embeddings must be .npy or .pt, not {p.suffix or 'no suffix'}")

    if arr.shape[0] == 0 or arr.shape[-1] == 0:
        raise LeopartError(f"{p}: embeddings are empty (shape {arr.shape})")
    if expected_count is not None and arr.shape[0] != expected_count:
        raise LeopartError(f"{p}: embeddings for {arr.shape[0]} images, but the split has {expected_count}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _square(arr: np.ndarray, p: Path) -> np.ndarray:
    """``(N, T, D)`` → ``(N, s, s, D)`` with ``s² = T`` (row-major tokens)."""
    n, t, d = arr.shape
    s = math.isqrt(t)
    if s * s != t:
        raise LeopartError(
            f"{p}: {t} tokens per image is not a square grid; store (N, h, w, D) as .npy for "
            f"non-square grids"
        )
    return arr.reshape(n, s, s, d)


def _load_tensor(p: Path) -> torch.Tensor:
    """Load a single floating tensor, memory-mapped when the file format allows it."""
    try:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise LeopartError(f"{p}: cannot read embeddings ({type(exc).__name__}{': ' + detail if detail else ''})") from None
    if not isinstance(obj, torch.Tensor):
        raise LeopartError(f"{p}: embeddings file holds a {type(obj).__name__}, expected a single tensor")
    if not obj.is_floating_point():
        raise LeopartError(f"{p}: embeddings have dtype {obj.dtype}, expected a floating type")
    if obj.dtype == torch.bfloat16:
        obj = obj.float()
    return obj.detach()

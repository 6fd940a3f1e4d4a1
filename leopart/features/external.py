"""Pre-computed patch embeddings from an external backbone (spec §4.2, §9.2).

Researchers with their own backbone can skip feature extraction and hand the pipeline a file of
patch embeddings per split. Accepted layouts:

``.npy`` (memory-mapped, never read whole):
    ``(N, h, w, D)`` — the project's token-grid layout;
    ``(N, h*w, D)`` — tokens row-major over a *square* grid, viewed as ``(N, s, s, D)``.
``.pt`` / ``.pth`` (a single tensor):
    ``(N, h*w, D)`` — e.g. the authors' ``all_pascal_{train,val}.pt`` ((1464|1449, 784, 50)
    float32, PCA-reduced tokens), square grid required;
    ``(N, D, h, w)`` — PyTorch channels-first feature maps, viewed as ``(N, h, w, D)``.
    A 4-D ``.pt`` tensor that looks channels-last (``shape[1] == shape[2] != shape[3]``) is
    refused as ambiguous: save ``(N, h, w, D)`` arrays as ``.npy`` instead.
    Plain ``torch.save`` files are memory-mapped without importing torch
    (:mod:`leopart.tensorfile`); other ``.pt`` files go through ``torch.load(weights_only=True,
    mmap=True)``.

:func:`open_embeddings` returns a lazy ``(N, h, w, D)`` view in the file's own dtype;
:func:`import_embeddings` converts it chunk by chunk into the pipeline's artefact, so peak memory
is set by the chunk (``chunk_bytes``), not by the file. The artefact keeps float16 (exact, half the
bytes of float32; every consumer converts per chunk); every other floating dtype becomes float32.
:func:`load_embeddings` is the whole-array float32 convenience for small files and tests.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leopart.errors import LeopartError
from leopart.io import load_npy, npy_writer, release_pages

PathLike = str | os.PathLike

__all__ = ["Embeddings", "import_embeddings", "load_embeddings", "open_embeddings"]


@dataclass(frozen=True)
class Embeddings:
    """A lazy ``(N, h, w, D)`` view of an embeddings file.

    Attributes:
        path: the source file.
        view: ``(N, h, w, D)`` view onto the file's data (``np.memmap``-backed, or onto a
            memory-mapped torch tensor), in the file's dtype (``uint16`` bits for bfloat16).
        bfloat16: True when ``view`` holds bfloat16 bit patterns.
        keepalive: object that owns the mapping (a torch tensor), kept referenced.
    """

    path: Path
    view: np.ndarray
    bfloat16: bool = False
    keepalive: Any = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, h, w, D)``."""
        return tuple(int(s) for s in self.view.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        """The artefact dtype: float16 for float16 files, float32 otherwise."""
        return np.dtype(np.float16) if self.view.dtype == np.float16 else np.dtype(np.float32)

    def read(self, start: int, stop: int, dtype: Any = None) -> np.ndarray:
        """Images ``start:stop`` as a contiguous ``(n, h, w, D)`` array in ``dtype`` (default :attr:`dtype`)."""
        from leopart.tensorfile import bfloat16_to_float32

        part = self.view[start:stop]
        if self.bfloat16:
            part = bfloat16_to_float32(part)
        return np.ascontiguousarray(part, dtype=dtype or self.dtype)

    def release(self) -> None:
        """Drop the pages read so far from this process (no-op for torch-owned mappings)."""
        release_pages(self.view)


def open_embeddings(path: PathLike, expected_count: int | None = None) -> Embeddings:
    """Open pre-computed embeddings as a lazy ``(N, h, w, D)`` view (nothing is read yet).

    Raises:
        LeopartError naming the file: missing/unreadable file, wrong rank or dtype, token count
        that is not a square, ``N`` different from ``expected_count``, empty array.
    """
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: embeddings file is missing")
    suffix = p.suffix.lower()
    bf16, keepalive = False, None
    if suffix == ".npy":
        arr = load_npy(p, mmap=True, dtype_kind="f", what="embeddings")
        if arr.ndim == 3:
            arr = _square(arr, p)
        elif arr.ndim != 4:
            raise LeopartError(f"{p}: .npy embeddings must be (N, h, w, D) or (N, h*w, D), found shape {arr.shape}")
    elif suffix in (".pt", ".pth"):
        arr, bf16, keepalive = _open_pt(p)
        if arr.ndim == 3:
            arr = _square(arr, p)
        elif arr.ndim == 4:
            if arr.shape[1] == arr.shape[2] and arr.shape[3] != arr.shape[2]:
                raise LeopartError(
                    f"{p}: 4-D .pt embeddings must be channels-first (N, D, h, w); shape "
                    f"{tuple(arr.shape)} looks like (N, h, w, D) — save that layout as .npy"
                )
            arr = arr.transpose(0, 2, 3, 1)
        else:
            raise LeopartError(
                f"{p}: .pt embeddings must be (N, h*w, D) or (N, D, h, w), found shape {tuple(arr.shape)}"
            )
    else:
        raise LeopartError(f"{p}: embeddings must be .npy or .pt, not {p.suffix or 'no suffix'}")

    if arr.shape[0] == 0 or arr.shape[-1] == 0:
        raise LeopartError(f"{p}: embeddings are empty (shape {arr.shape})")
    if expected_count is not None and arr.shape[0] != expected_count:
        raise LeopartError(f"{p}: embeddings for {arr.shape[0]} images, but the split has {expected_count}")
    return Embeddings(path=p, view=arr, bfloat16=bf16, keepalive=keepalive)


def import_embeddings(
    path: PathLike,
    out_path: PathLike,
    expected_count: int | None = None,
    chunk_bytes: int = 64 << 20,
) -> dict[str, Any]:
    """Write embeddings as the pipeline's ``(N, h, w, D)`` ``.npy`` artefact, chunk by chunk.

    Args:
        path: source file (layouts in the module docstring).
        out_path: output ``.npy`` (written atomically); float16 if the source is float16, else
            float32.
        expected_count: number of images of the split, if known.
        chunk_bytes: output bytes converted per step; resident memory stays at a few chunks
            (source and output pages are released after each one).

    Returns:
        ``{"shape", "dtype", "source_dtype", "chunk_images"}``.
    """
    emb = open_embeddings(path, expected_count)
    n, h, w, d = emb.shape
    per_image = h * w * d * emb.dtype.itemsize
    step = max(1, int(chunk_bytes) // max(1, per_image))
    with npy_writer(out_path, emb.shape, emb.dtype) as out:
        for start in range(0, n, step):
            stop = min(n, start + step)
            out[start:stop] = emb.read(start, stop)
            emb.release()
            out.flush()
            release_pages(out)
    return {"shape": [n, h, w, d], "dtype": emb.dtype.name,
            "source_dtype": "bfloat16" if emb.bfloat16 else emb.view.dtype.name, "chunk_images": step}


def load_embeddings(path: PathLike, expected_count: int | None = None) -> np.ndarray:
    """Load pre-computed embeddings as an ``(N, h, w, D)`` float32 array.

    Float32 ``.npy`` input is returned as a read-only memmap view; any other input is read and
    converted whole (use :func:`import_embeddings` for files that do not fit in memory).

    Raises:
        LeopartError naming the file (see :func:`open_embeddings`).
    """
    emb = open_embeddings(path, expected_count)
    if not emb.bfloat16 and emb.view.dtype == np.float32 and isinstance(emb.view, np.memmap):
        return emb.view
    return emb.read(0, emb.shape[0], dtype=np.float32)


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


def _open_pt(p: Path) -> tuple[np.ndarray, bool, Any]:
    """``(view, bfloat16, keepalive)`` of a single floating tensor, memory-mapped."""
    from leopart.tensorfile import TensorView, UnsupportedTensorFile, open_tensor

    try:
        obj = open_tensor(p)
    except UnsupportedTensorFile:
        obj = None
    except OSError as exc:
        raise LeopartError(f"{p}: cannot read embeddings ({type(exc).__name__})") from None
    if isinstance(obj, TensorView):
        if obj.array.dtype.kind != "f" and not obj.bfloat16:
            raise LeopartError(f"{p}: embeddings have dtype {obj.torch_dtype}, expected a floating type")
        return obj.array, obj.bfloat16, None
    if obj is not None:
        raise LeopartError(f"{p}: embeddings file holds a {type(obj).__name__}, expected a single tensor")
    return _open_pt_with_torch(p)


def _open_pt_with_torch(p: Path) -> tuple[np.ndarray, bool, Any]:
    import torch

    try:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise LeopartError(f"{p}: cannot read embeddings ({reason})") from None
    if not isinstance(obj, torch.Tensor):
        raise LeopartError(f"{p}: embeddings file holds a {type(obj).__name__}, expected a single tensor")
    if not obj.is_floating_point():
        raise LeopartError(f"{p}: embeddings have dtype {obj.dtype}, expected a floating type")
    obj = obj.detach()
    if obj.dtype == torch.bfloat16:
        return obj.view(torch.int16).numpy().view(np.uint16), True, obj
    return obj.numpy(), False, obj

"""Streamed extraction of patch tokens and last-block CLS attention (spec §4.1).

For every image of a dataset (in order) the ViT's final-LayerNorm patch tokens ``(h, w, D)`` and
the last block's CLS→patch attention ``(heads, h*w)`` are written, batch by batch, into two
``.npy`` memmaps (:func:`leopart.io.npy_writer`), so the full token array (≈1.7 GB for 1449
PVOC images at 448²) never has to sit in memory and appears atomically when complete.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from leopart.errors import LeopartError
from leopart.io import npy_writer
from leopart.models.vit import tokens_and_attention

PathLike = str | os.PathLike

__all__ = ["PRECISIONS", "extract_features", "precision_context", "shard_range", "shard_count"]

#: Values of ``features.precision``.
PRECISIONS = ("fp32", "bf16")


def extract_features(
    model: nn.Module,
    dataset: Dataset,
    tokens_path: PathLike,
    attn_path: PathLike,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Run ``model`` over ``dataset`` and stream tokens and CLS attention to ``.npy`` files.

    Args:
        model: a ViT from :func:`leopart.models.vit.build_vit` (moved to ``device``, put in eval
            mode).
        dataset: map-style dataset of normalised ``(3, H, W)`` float tensors (or tuples/lists whose
            first element is that tensor), all of the same size; order is preserved.
        tokens_path: output ``(N, h, w, D)`` float32 ``.npy``.
        attn_path: output ``(N, heads, h*w)`` float32 ``.npy``.
        batch_size: images per forward pass (affects only float round-off).
        device: torch device; on CUDA, TF32 matmuls/convolutions are disabled for the duration of
            the call (fp32 as the authors' GPUs).
        num_workers: DataLoader workers.
        progress: show a tqdm progress bar (stderr).
        precision: ``"fp32"`` (default; the authors' numerics) or ``"bf16"`` (bfloat16 autocast on
            the device, CPU included; outputs are still written as float32). Config key
            ``features.precision``.

    Returns:
        ``{"num_images", "tokens_shape", "attn_shape", "grid", "seconds", "images_per_second"}``.
    """
    from tqdm import tqdm

    n = len(dataset)
    if n == 0:
        raise LeopartError(f"{tokens_path}: cannot extract features from an empty dataset")
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise LeopartError(f"features.precision: expected one of {PRECISIONS}, got {precision!r}")
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False,
        pin_memory=device.type == "cuda",
    )
    model = model.to(device).eval()
    start_time = time.perf_counter()
    tokens_shape: tuple[int, ...] | None = None
    attn_shape: tuple[int, ...] | None = None
    done = 0
    with contextlib.ExitStack() as stack, precision_context(device, precision), torch.inference_mode():
        bar = stack.enter_context(tqdm(total=n, unit="img", desc="features", disable=not progress))
        tokens_out: np.ndarray | None = None
        attn_out: np.ndarray | None = None
        for batch in _images(loader):
            tokens, cls_attn = tokens_and_attention(model, batch.to(device, non_blocking=True))
            b = tokens.shape[0]
            if tokens_out is None:
                tokens_shape = (n, *tokens.shape[1:])
                attn_shape = (n, *cls_attn.shape[1:])
                tokens_out = stack.enter_context(npy_writer(tokens_path, tokens_shape, np.float32))
                attn_out = stack.enter_context(npy_writer(attn_path, attn_shape, np.float32))
            elif tokens.shape[1:] != tokens_shape[1:]:
                raise LeopartError(
                    f"{tokens_path}: image {done} gives a {tuple(tokens.shape[1:3])} token grid, "
                    f"earlier images {tuple(tokens_shape[1:3])}; all images must have the same size"
                )
            if done + b > n:
                raise LeopartError(f"{tokens_path}: dataset yielded more than its length {n}")
            tokens_out[done : done + b] = tokens.cpu().numpy()
            attn_out[done : done + b] = cls_attn.cpu().numpy()
            done += b
            bar.update(b)
        if done != n:
            raise LeopartError(f"{tokens_path}: dataset yielded {done} images, but its length is {n}")
    seconds = time.perf_counter() - start_time
    return {
        "num_images": n,
        "tokens_shape": list(tokens_shape),
        "attn_shape": list(attn_shape),
        "grid": list(tokens_shape[1:3]),
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("inf"),
    }


def shard_count(n: int, shard_size: int | None) -> int:
    """Number of shard jobs for ``n`` images (``shard_size`` None: one job for the whole split)."""
    if shard_size is None:
        return 1
    if shard_size < 1:
        raise LeopartError(f"features.shard_size: must be a positive integer, got {shard_size}")
    return max(1, -(-n // shard_size))


def shard_range(n: int, shard_size: int | None, shard: int) -> tuple[int, int]:
    """Images ``[start, stop)`` of shard ``shard`` (0-based) of a split of ``n`` images."""
    count = shard_count(n, shard_size)
    if not 0 <= shard < count:
        raise LeopartError(f"shard {shard} does not exist: {n} images in {count} shard(s) of {shard_size}")
    if shard_size is None:
        return 0, n
    return shard * shard_size, min(n, (shard + 1) * shard_size)


def _images(loader: DataLoader) -> Iterator[torch.Tensor]:
    """Yield the image tensor of every batch (first element of tuple/list batches)."""
    for batch in loader:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
            raise LeopartError(
                f"dataset: expected batches of (B, 3, H, W) image tensors, got "
                f"{getattr(batch, 'shape', type(batch).__name__)}"
            )
        yield batch.float()


@contextlib.contextmanager
def precision_context(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """Numerics of a forward pass: strict fp32 or bfloat16 autocast.

    ``"fp32"``: on CUDA, TF32 matmuls/convolutions are disabled inside the block (the previous
    settings are restored); on CPU nothing changes. ``"bf16"``: ``torch.autocast`` with
    ``dtype=torch.bfloat16`` on the device type (CPU or CUDA).
    """
    device = torch.device(device)
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

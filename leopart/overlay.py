"""Render one image of a label map as a PNG: VOC palette colours, optionally blended with the image.

Label maps are ``(N, h, w)`` integer arrays (token or evaluation resolution; ground truth uses 255
for "ignore"), or ``(runs, N, h, w)`` for the merged maps of several Infomap runs
(``val_merged.npy``). With an image, the map is upsampled with PyTorch legacy nearest
(:func:`leopart.resample.nearest_indices`, as the evaluation does) to the image size and blended
with it; without one, the palette map is written at its own resolution. Results smaller than
256 px are enlarged by an integer factor (pixel replication) so that token grids stay visible.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from leopart.errors import LeopartError
from leopart.resample import nearest_indices


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``(n, 3)`` uint8, label ``i``'s colour from the bits of ``i``.

    0 is black (background), 1 ``(128, 0, 0)``, 2 ``(0, 128, 0)``, 15 ``(192, 128, 128)``
    (person), 255 ``(224, 224, 192)`` (ignore). Labels above 255 keep getting distinct colours
    from their higher bits.
    """
    labels = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    bits = labels.copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            rgb[:, channel] |= ((bits >> channel) & 1) << shift
        bits >>= 3
    # labels >= 2**24 would repeat; the ones a label map can hold are far fewer
    return rgb.astype(np.uint8)


def select_map(labels: np.ndarray, index: int, run: int | None, path: str | os.PathLike) -> np.ndarray:
    """The ``(h, w)`` label map of image ``index`` (and ``run`` for 4-D maps) with checks.

    Raises:
        LeopartError: wrong dimensionality, non-integer dtype, or an index out of range.
    """
    if labels.dtype.kind not in "iub":
        raise LeopartError(f"{path}: label map has dtype {labels.dtype}, expected integers")
    if labels.ndim == 4:
        r = 0 if run is None else run
        if not 0 <= r < labels.shape[0]:
            raise LeopartError(f"{path}: --run {r} out of range (the file holds {labels.shape[0]} runs)")
        labels = labels[r]
    elif labels.ndim == 3:
        if run not in (None, 0):
            raise LeopartError(f"{path}: --run given but the label map has shape {labels.shape} (no run axis)")
    else:
        raise LeopartError(f"{path}: label map must be (N, h, w) or (runs, N, h, w), found shape {labels.shape}")
    if not 0 <= index < labels.shape[0]:
        raise LeopartError(f"{path}: image index {index} out of range (the map holds {labels.shape[0]} images)")
    out = np.asarray(labels[index])
    if out.size and out.min() < 0:
        raise LeopartError(f"{path}: image {index} has negative labels (min {out.min()})")
    return out


def colourise(label_map: np.ndarray) -> np.ndarray:
    """``(h, w)`` labels -> ``(h, w, 3)`` uint8 VOC palette colours."""
    top = int(label_map.max()) + 1 if label_map.size else 1
    return voc_palette(max(256, top))[label_map.astype(np.int64)]


def resize_nearest(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest upsampling of ``(h, w)`` labels to ``(height, width)`` (PyTorch legacy indices)."""
    rows = nearest_indices(label_map.shape[0], height)
    cols = nearest_indices(label_map.shape[1], width)
    return label_map[rows[:, None], cols[None, :]]


def image_for(image: str | os.PathLike, index: int) -> Path:
    """The image file to blend with: ``image`` itself, or row ``index``'s ``image`` entry when
    ``image`` is a dataset manifest (``results/<run>/dataset/<split>.parquet``).

    Manifest paths are relative to the Snakemake working folder: the parent of ``results/``.
    """
    p = Path(image)
    if p.suffix.lower() != ".parquet":
        return p
    import pandas as pd

    if not p.is_file():
        raise LeopartError(f"{p}: dataset manifest is missing")
    try:
        table = pd.read_parquet(p, columns=["image"])
    except Exception as exc:  # noqa: BLE001
        raise LeopartError(f"{p}: cannot read the 'image' column of the manifest ({type(exc).__name__})") from None
    if not 0 <= index < len(table):
        raise LeopartError(f"{p}: image index {index} out of range (the manifest lists {len(table)} images)")
    entry = table["image"].iloc[index]
    if entry is None or (isinstance(entry, float) and np.isnan(entry)) or entry is pd.NA:
        raise LeopartError(f"{p}: the manifest has no images (mask-only dataset); omit --image")
    img = Path(str(entry))
    if img.is_absolute():
        return img
    absolute = p.absolute()
    for parent in absolute.parents:
        if parent.name == "results":
            return parent.parent / img
    return img


def render_overlay(labels_path: str | os.PathLike, index: int, *, run: int | None = None,
                   image: str | os.PathLike | None = None, alpha: float = 0.5,
                   min_size: int = 256) -> tuple[np.ndarray, dict[str, object]]:
    """Build the overlay of image ``index`` of the label map at ``labels_path``.

    Args:
        labels_path: ``.npy`` label map ``(N, h, w)`` or ``(runs, N, h, w)``.
        index: image index along N.
        run: run index of a 4-D map (default 0).
        image: an image file, or a dataset manifest Parquet whose row ``index`` names the image.
        alpha: weight of the label colours in the blend (0 = image only, 1 = colours only).
        min_size: the result is enlarged by an integer factor (pixel replication) until its
            longer side reaches this size, so that token grids and toy images stay visible.

    Returns:
        ``(H, W, 3)`` uint8 RGB array and a dict describing it (sizes, labels present, image).
    """
    lp = Path(labels_path)
    if not lp.is_file():
        raise LeopartError(f"{lp}: label map file is missing")
    try:
        labels = np.load(lp, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise LeopartError(f"{lp}: cannot read label map as .npy ({type(exc).__name__}: {exc})") from None
    if not 0.0 <= alpha <= 1.0:
        raise LeopartError(f"--alpha {alpha}: must be between 0 and 1")
    lab = select_map(labels, index, run, lp)
    info: dict[str, object] = {"labels": str(lp), "index": index, "map_shape": list(lab.shape),
                               "labels_present": np.unique(lab).tolist()}
    if labels.ndim == 4:
        info["run"] = 0 if run is None else run
    if image is None:
        factor = max(1, -(-min_size // max(1, max(lab.shape))))
        out = colourise(np.repeat(np.repeat(lab, factor, axis=0), factor, axis=1))
        info["scale"] = factor
        return out, info
    from PIL import Image, UnidentifiedImageError

    img_path = image_for(image, index)
    if not img_path.is_file():
        raise LeopartError(f"{img_path}: image file is missing")
    try:
        with Image.open(img_path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise LeopartError(f"{img_path}: cannot read image ({type(exc).__name__})") from None
    h, w = rgb.shape[:2]
    colours = colourise(resize_nearest(lab, h, w)).astype(np.float32)
    out = np.clip(alpha * colours + (1.0 - alpha) * rgb.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
    info["image"] = str(img_path)
    info["image_size"] = [h, w]
    factor = max(1, -(-min_size // max(h, w)))
    info["scale"] = factor
    if factor > 1:
        out = np.repeat(np.repeat(out, factor, axis=0), factor, axis=1)
    return out, info


def write_overlay(out: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 array as PNG atomically."""
    from PIL import Image

    from leopart.io import atomic_path

    with atomic_path(out, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")

"""Segmentations as files: a label map at token resolution -> one palette PNG per image, at the
image's own resolution.

A row's label map ``(N, h, w)`` is first relabelled with the row's matching (``mapping[p]`` = the
ground-truth class of predicted label ``p``, from the row's metric JSON; identity when there is
none), then upsampled with PyTorch legacy nearest indices (:func:`leopart.resample.nearest_indices`,
the evaluation's convention) to each image's ``(H, W)``. Image sizes are read from the file
headers (PIL opens lazily and decodes no pixel). Images of the same size are upsampled together,
a chunk at a time, with one gather.

Folder layout written by :func:`write_segmentations` (``results/<run>/segmentations/<row>/``)::

    <name>.png            palette PNG (mode P, VOC palette), pixel value = class id (or label id)
    overlays/<name>.png   RGB: the image with the class colours blended in (background clear)
    segmentation.json     row, ids ("class" or "label"), class names, mapping, sizes, sources
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from leopart.errors import LeopartError
from leopart.overlay import colourise, voc_palette
from leopart.resample import nearest_indices

log = logging.getLogger(__name__)


class _LogWriter(io.TextIOBase):
    """A text stream that sends each non-empty tqdm refresh to the ``leopart`` log (the rule log)."""

    def write(self, text: str) -> int:
        line = text.strip("\r\n ")
        if line:
            log.info("%s", line)
        return len(text)


def progress(total: int, desc: str, unit: str = "img") -> tqdm:
    """A ``tqdm`` bar whose refreshes (every 2 s at most) go to the log, not to a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, file=_LogWriter(), mininterval=2.0, ascii=True,
                ncols=80)


def image_sizes(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """``(N, 2)`` int64 ``(height, width)`` of each image file, from its header only."""
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                sizes[i] = (im.height, im.width)
        except (FileNotFoundError, OSError) as exc:
            raise LeopartError(f"{path}: cannot read the image size ({type(exc).__name__})") from None
    return sizes


def apply_mapping(labels: np.ndarray, mapping: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """``mapping[labels]`` (the matched class of every label); ``labels`` itself for no mapping.

    Raises:
        LeopartError: a label has no entry in ``mapping``.
    """
    if mapping is None:
        return np.asarray(labels)
    table = np.asarray(mapping, dtype=np.int64)
    top = int(labels.max()) if labels.size else -1
    if top >= table.size or (labels.size and int(labels.min()) < 0):
        raise LeopartError(f"label map holds labels up to {top} but the matching maps {table.size} labels")
    return table[np.asarray(labels, dtype=np.int64)]


def upsample_to(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Token maps ``(n, h, w)`` -> ``(n, height, width)`` with PyTorch legacy nearest indices."""
    rows = nearest_indices(labels.shape[-2], height)
    cols = nearest_indices(labels.shape[-1], width)
    return labels[:, rows[:, None], cols[None, :]]


def palette_image(ids: np.ndarray) -> Image.Image:
    """``(H, W)`` ids 0..255 -> a mode-P PIL image with the VOC palette (pixel value = id)."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > 255):
        raise LeopartError(f"ids {int(ids.min())}..{int(ids.max())} do not fit a palette PNG (0..255)")
    img = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8), mode="P")
    img.putpalette(voc_palette(256).reshape(-1).tolist())
    return img


def blend(rgb: np.ndarray, ids: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """``(H, W, 3)`` uint8 image with the palette colours of ``ids`` blended in at ``alpha``;
    id 0 (background) leaves the image as it is."""
    colours = colourise(ids).astype(np.float32)
    a = np.where(ids[..., None] > 0, np.float32(alpha), np.float32(0.0))
    return np.clip(a * colours + (1.0 - a) * rgb.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def _groups(sizes: np.ndarray, chunk: int) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """Image indices grouped by size, in chunks of at most ``chunk`` images."""
    uniq, inverse = np.unique(sizes, axis=0, return_inverse=True)
    for g, (h, w) in enumerate(uniq):
        idx = np.flatnonzero(inverse.reshape(-1) == g)
        for start in range(0, idx.size, chunk):
            yield (int(h), int(w)), idx[start:start + chunk]


def write_segmentations(
    out_dir: str | os.PathLike,
    labels: np.ndarray,
    names: Sequence[str],
    sizes: np.ndarray,
    *,
    mapping: Sequence[int] | None = None,
    images: Sequence[str | os.PathLike] | None = None,
    overlays: int = 0,
    alpha: float = 0.55,
    chunk: int = 64,
    desc: str = "segmentations",
) -> dict[str, Any]:
    """Write the folder of :mod:`this module <leopart.report.segmentations>` for one row.

    Args:
        out_dir: the row's folder; written as ``<out_dir>.tmp`` and renamed when complete.
        labels: ``(N, h, w)`` integer label map at token resolution.
        names: ``N`` image names (file stems of the PNGs).
        sizes: ``(N, 2)`` ``(height, width)`` of each image.
        mapping: ``mapping[p]`` = class id of label ``p`` (None: the label ids are written).
        images: ``N`` image files, for the overlays (None: no overlays).
        overlays: overlays are written for the first ``overlays`` images.
        alpha: weight of the class colours in the overlays.
        chunk: images upsampled at once.

    Returns:
        A summary: image count, ids present (with pixel counts), overlay names.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "iu":
        raise LeopartError(f"label map must be (N, h, w) integers, got {labels.dtype} {labels.shape}")
    if len(names) != labels.shape[0] or sizes.shape != (labels.shape[0], 2):
        raise LeopartError(f"{labels.shape[0]} label maps for {len(names)} names and {sizes.shape[0]} sizes")
    ids = apply_mapping(labels, mapping)
    out, tmp = Path(out_dir), Path(f"{out_dir}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "overlays").mkdir(parents=True)
    n_overlays = min(int(overlays), len(names)) if images is not None else 0
    counts = np.zeros(256, dtype=np.int64)
    bar = progress(len(names), desc)
    for (h, w), idx in _groups(sizes, chunk):
        up = upsample_to(ids[idx], h, w)
        counts += np.bincount(up.reshape(-1), minlength=256)[:256]
        for j, i in enumerate(idx):
            palette_image(up[j]).save(tmp / f"{names[i]}.png", format="PNG", optimize=False)
            if i < n_overlays:
                with Image.open(images[i]) as im:
                    rgb = np.asarray(im.convert("RGB"))
                Image.fromarray(blend(rgb, up[j], alpha)).save(tmp / "overlays" / f"{names[i]}.png")
        bar.update(idx.size)
    bar.close()
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    present = np.flatnonzero(counts)
    return {"images": len(names), "overlays": [str(n) for n in names[:n_overlays]],
            "ids_present": present.tolist(), "pixels_per_id": counts[present].tolist()}

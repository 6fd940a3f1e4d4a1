"""Ground-truth label masks: validated loading and the evaluation-resolution ground truth.

Masks are single-channel PNGs whose pixel values are class indices (``0..num_classes-1``) or
255 (ignore). Palette ("P") and greyscale ("L") images both store indices directly; any other mode
(RGB colour-coded masks, 16-bit, …) is rejected rather than guessed.

Ground truth for evaluation follows spec §1.3: PIL ``NEAREST`` resize to ``input_size``² (what the
authors' transform does), then PyTorch legacy nearest (``src = floor(dst * in / out)``) to
``eval_size``² — both through :mod:`leopart.resample`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from leopart.data.classes import IGNORE_LABEL
from leopart.errors import LeopartError
from leopart.resample import pil_nearest_resize, upsample_labels

INDEX_MODES = ("P", "L")


def _open_image(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image, turning every failure into a one-line LeopartError."""
    if not path.is_file():
        raise LeopartError(f"{path}: {what} file is missing")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LeopartError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None
    return img


def _header_size(path: Path, what: str) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, every failure a one-line LeopartError."""
    if not path.is_file():
        raise LeopartError(f"{path}: {what} file is missing")
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LeopartError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None


def load_mask(path: str | Path, num_classes: int, background_class: int = 0,
              ignore_index: int = IGNORE_LABEL) -> np.ndarray:
    """Load a class-index mask, validate its labels and bring them to the pipeline's convention.

    Args:
        path: PNG (or other PIL-readable) mask in mode "P" or "L".
        num_classes: number of classes including background; valid labels are
            ``0..num_classes-1`` and ``ignore_index``.
        background_class: the dataset's background label (``dataset.background_class``), swapped
            with 0 (:func:`leopart.data.folder.remap_mask`).
        ignore_index: the dataset's ignore label (``dataset.ignore_index``), mapped to 255.

    Returns:
        ``(H, W)`` uint8 array of labels, 0 = background, 255 = ignore.

    Raises:
        LeopartError: missing/corrupt file, a non-index image mode, or labels out of range (the
            message names the file and the offending values).
    """
    p = Path(path)
    img = _open_image(p, "mask")
    if img.mode not in INDEX_MODES:
        raise LeopartError(f"{p}: mask has image mode {img.mode!r}; expected a class-index mask in mode "
                           f"'P' (palette) or 'L' (greyscale)")
    arr = np.asarray(img, dtype=np.uint8)
    bad = (arr >= num_classes) & (arr != ignore_index)
    if bad.any():
        values = np.unique(arr[bad])
        shown = ", ".join(str(int(v)) for v in values[:10]) + (" …" if len(values) > 10 else "")
        raise LeopartError(f"{p}: mask has label value(s) {shown} outside 0..{num_classes - 1} and "
                           f"{ignore_index} (dataset.num_classes / dataset.ignore_index)")
    from leopart.data.folder import remap_mask

    return remap_mask(arr, background_class, ignore_index)


def ground_truth(
    mask_paths: Sequence[str | Path],
    num_classes: int,
    input_size: int = 448,
    eval_size: int = 100,
    progress: bool = True,
    background_class: int = 0,
    ignore_index: int = IGNORE_LABEL,
) -> np.ndarray:
    """Ground-truth label maps at evaluation resolution.

    Each mask is loaded and validated (:func:`load_mask`), PIL-nearest resized to
    ``input_size``² and then torch-legacy-nearest resampled to ``eval_size``².

    Args:
        mask_paths: mask files in dataset order.
        num_classes: number of classes including background.
        input_size: side (pixels) of the network input the masks are first resized to.
        eval_size: side (pixels) of the returned label maps.
        progress: show a tqdm bar.
        background_class, ignore_index: the dataset's labels for them (:func:`load_mask`).

    Returns:
        ``(N, eval_size, eval_size)`` uint8, 0 = background, 255 = ignore.
    """
    out = np.empty((len(mask_paths), eval_size, eval_size), dtype=np.uint8)
    for i, path in enumerate(tqdm(mask_paths, desc="ground truth", unit="mask", disable=not progress)):
        arr = load_mask(path, num_classes, background_class, ignore_index)
        resized = np.asarray(pil_nearest_resize(Image.fromarray(arr), input_size))
        out[i] = upsample_labels(resized, eval_size)
    return out


def check_image_mask_sizes(image_path: str | Path, mask_path: str | Path) -> tuple[int, int]:
    """Check that an image and its mask have the same size (reads headers only).

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        LeopartError: a file is missing/unreadable, or the sizes differ (names both files).
    """
    sizes = [_header_size(Path(image_path), "image"), _header_size(Path(mask_path), "mask")]
    if sizes[0] != sizes[1]:
        raise LeopartError(f"{mask_path}: mask size {sizes[1][0]}x{sizes[1][1]} differs from image {image_path} "
                           f"size {sizes[0][0]}x{sizes[0][1]}")
    return sizes[0]


def check_image_readable(image_path: str | Path) -> tuple[int, int]:
    """Check that an image exists and PIL can identify it (reads the header only).

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        LeopartError: the file is missing or unreadable (names it).
    """
    return _header_size(Path(image_path), "image")

"""Any folder of images as a dataset (``dataset.kind: folder``), masks optional.

Layout: ``dataset.folder.images`` holds the images, flat (no sub-folders), one per file stem, in
any format PIL opens (``.jpg``, ``.png``, ``.tif``, ``.webp``, …, case-insensitive extensions);
any size; grayscale, palette, CMYK and alpha images are converted to RGB when read
(:func:`leopart.data.images.load_rgb`). ``dataset.folder.masks`` (optional) holds one class-index
mask per image, ``<stem>.png`` (or any PIL-readable extension) in mode ``P`` or ``L``, matched by
file stem; when it is null the run is *label-free* (no ground truth, see README "Your own images").

Splits: ``dataset.folder.splits.{train,val}`` are text files listing stems (one per line); when
null the images are split at random with ``dataset.folder.seed``: ``round(val_fraction · N)``
images (at least 1) go to val, the rest to train, both in sorted-stem order. The split is recorded
in the manifest sidecar (``split`` entry: seed, fraction, counts).

Labels: masks store the dataset's own label values. :func:`remap_mask` turns them into the
pipeline's convention, *label 0 = background, 255 = ignore*: ``dataset.background_class`` is
swapped with 0 and ``dataset.ignore_index`` becomes 255. :func:`internal_class_names` permutes
the class names the same way. Every bad input stops with a one-line :class:`LeopartError` naming
the file: a folder without images, masks without images (or images without masks), an image and
its mask of different sizes, labels outside ``num_classes``, unreadable files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leopart.data.classes import IGNORE_LABEL
from leopart.data.dataset import SplitIndex
from leopart.data.voc import image_extensions
from leopart.errors import LeopartError

__all__ = ["folder_split_index", "index_folder", "internal_class_names", "random_split", "remap_mask"]


def index_folder(folder: str | Path, what: str = "image") -> dict[str, Path]:
    """Files of ``folder`` that PIL can open, by stem (one directory listing, sorted by stem).

    Raises:
        LeopartError: the folder is missing, holds no such file, or two files share a stem.
    """
    base = Path(folder)
    if not base.is_dir():
        raise LeopartError(f"{base}: {what} folder is missing")
    exts = image_extensions()
    by_stem: dict[str, Path] = {}
    for entry in sorted(os.listdir(base)):
        stem, dot, ext = entry.rpartition(".")
        if not dot or ("." + ext.lower()) not in exts or not (base / entry).is_file():
            continue
        if stem in by_stem:
            raise LeopartError(f"{base / entry}: another {what} has the stem {stem!r} ({by_stem[stem].name}); keep one")
        by_stem[stem] = base / entry
    if not by_stem:
        raise LeopartError(f"{base}: {what} folder holds no {what} file PIL can read")
    return dict(sorted(by_stem.items()))


def random_split(names: Sequence[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded random split of ``names``: ``max(1, round(val_fraction · N))`` to val, the rest to
    train (at least 1), each in the order of ``names``.

    Raises:
        LeopartError: fewer than 2 names (train and val need one image each).
    """
    n = len(names)
    if n < 2:
        raise LeopartError(f"dataset.folder: {n} image(s); a train/val split needs at least 2")
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    val = set(perm[:n_val].tolist())
    return {"train": [x for i, x in enumerate(names) if i not in val],
            "val": [x for i, x in enumerate(names) if i in val]}


def internal_class_names(num_classes: int, class_names: Sequence[str] | None, background_class: int) -> list[str]:
    """Class names in the pipeline's label order (0 = background): the dataset's names (default
    ``"class <i>"`` with ``"background"`` at ``background_class``) with positions 0 and
    ``background_class`` swapped, as :func:`remap_mask` swaps the labels."""
    if class_names is not None:
        if len(class_names) != num_classes:
            raise LeopartError(f"dataset.class_names: {len(class_names)} names for {num_classes} classes")
        names = list(class_names)
    else:
        names = [f"class {i}" for i in range(num_classes)]
        names[background_class] = "background"
    names[0], names[background_class] = names[background_class], names[0]
    return names


def remap_mask(arr: np.ndarray, background_class: int = 0, ignore_index: int = IGNORE_LABEL) -> np.ndarray:
    """A mask in the dataset's labels → the pipeline's labels (0 = background, 255 = ignore).

    Args:
        arr: ``(H, W)`` uint8 labels, already validated (:func:`leopart.data.masks.load_mask`).
        background_class: the dataset's background label, swapped with 0.
        ignore_index: the dataset's ignore label, mapped to 255.

    Returns:
        ``(H, W)`` uint8 (a new array unless both are the defaults).
    """
    if background_class == 0 and ignore_index == IGNORE_LABEL:
        return arr
    out = arr.copy()
    if background_class != 0:
        out[arr == background_class] = 0
        out[arr == 0] = background_class
    if ignore_index != IGNORE_LABEL:
        out[arr == ignore_index] = IGNORE_LABEL
    return out


def _split_names(section: dict[str, Any], stems: list[str], split: str) -> tuple[list[str], dict[str, Any]]:
    """The stems of ``split`` and the record of how the split was made."""
    from leopart.data.voc import read_split_list

    splits = section.get("splits") or {}
    if splits.get(split):
        path = Path(splits[split])
        names = read_split_list(path)
        known = set(stems)
        unknown = [n for n in names if n not in known]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise LeopartError(f"{path}: lists {unknown[0]!r}, which has no image in {section['images']}{more}")
        return names, {"source": str(path)}
    if splits:
        raise LeopartError(f"dataset.folder.splits.{split}: split list missing (give both train and val, or neither)")
    fraction, seed = float(section.get("val_fraction", 0.2)), int(section.get("seed", 0))
    parts = random_split(stems, fraction, seed)
    return parts[split], {"source": "random", "seed": seed, "val_fraction": fraction,
                          "train": len(parts["train"]), "val": len(parts["val"])}


def folder_split_index(
    section: dict[str, Any],
    split: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    background_class: int = 0,
) -> tuple[SplitIndex, dict[str, Any]]:
    """Index of one split of an image folder (see the module docstring).

    Args:
        section: the ``dataset.folder`` config (``images``, ``masks``, ``splits``, ``val_fraction``, ``seed``).
        split: ``train`` or ``val``.
        num_classes, class_names, background_class: the dataset's classes (:func:`internal_class_names`).

    Returns:
        ``(index, split_record)``; ``index.mask_paths`` is ``None`` without masks.

    Raises:
        LeopartError: every bad input listed in the module docstring, naming the file.
    """
    images = index_folder(section["images"], "image")
    masks_dir = section.get("masks")
    masks = index_folder(masks_dir, "mask") if masks_dir else None
    if masks is not None:
        orphan = [s for s in masks if s not in images]
        if orphan:
            more = f" (and {len(orphan) - 1} more)" if len(orphan) > 1 else ""
            raise LeopartError(f"{masks[orphan[0]]}: mask without an image (no {orphan[0]}.* in "
                               f"{section['images']}){more}")
        missing = [s for s in images if s not in masks]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise LeopartError(f"{images[missing[0]]}: image without a mask (no {missing[0]}.* in {masks_dir}){more}")
    names, record = _split_names(section, list(images), split)
    index = SplitIndex(
        names=names,
        image_paths=[images[n] for n in names],
        mask_paths=[masks[n] for n in names] if masks is not None else None,
        class_names=internal_class_names(num_classes, class_names, background_class),
    )
    return index, record

"""Locate a PASCAL VOC 2012 folder and build the :class:`SplitIndex` of a split (spec §1.1).

Two layouts are accepted:

* **authors** (the Leopart zip): ``<folder>/VOCSegmentation/{images, SegmentationClass,
  SegmentationClassAug, sets}`` or ``<folder>`` being that ``VOCSegmentation`` folder. Split
  ``"train"`` takes its masks from ``SegmentationClassAug`` (as the authors' code does;
  ``train_masks="SegmentationClass"`` selects the official masks instead), every other split from
  ``SegmentationClass``. Split lists are ``sets/<split>.txt``; images ``images/<name>.jpg``.
* **official**: ``<folder>/VOCdevkit/VOC2012``, ``<folder>/VOC2012`` or ``<folder>`` itself holding
  ``{JPEGImages, SegmentationClass, ImageSets/Segmentation}``. All splits use
  ``SegmentationClass``; split lists are ``ImageSets/Segmentation/<split>.txt``; images
  ``JPEGImages/<name>.<ext>``. The mask-only folder shipped in ``shared/data/voc2012-masks``
  (no ``JPEGImages``) is this layout.

Images are found by stem: ``<name>`` with any extension PIL reads (``.jpg``, ``.JPG``, ``.png``,
``.tif``, …, case-insensitive), from one directory listing (no per-file stat); masks are
``<name>.png``. Any class count and split size is accepted (``expected_count`` checks the official
ones); class names are ``class_names`` when given, else PASCAL VOC's for 21 classes, else
``"class <i>"`` (:func:`default_class_names`).

Split-list order is preserved: it is the order of every tensor the pipeline saves.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from leopart.data.classes import VOC_CLASSES
from leopart.data.dataset import SplitIndex
from leopart.errors import LeopartError

AUTHORS, OFFICIAL = "authors", "official"
VOC_SPLIT_SIZES: dict[str, int] = {"train": 1464, "val": 1449, "trainval": 2913}
TRAIN_MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")


def _is_authors_root(d: Path) -> bool:
    return (d / "sets").is_dir() and ((d / "SegmentationClass").is_dir() or (d / "SegmentationClassAug").is_dir())


def _is_official_root(d: Path) -> bool:
    return (d / "ImageSets" / "Segmentation").is_dir() and (d / "SegmentationClass").is_dir()


def _missing_pieces(layout: str, d: Path) -> list[str]:
    """Sub-folders of ``layout`` that ``d`` lacks (empty when ``d`` is a root of that layout)."""
    if layout == AUTHORS:
        missing = [] if (d / "sets").is_dir() else ["sets/"]
        if not ((d / "SegmentationClass").is_dir() or (d / "SegmentationClassAug").is_dir()):
            missing.append("SegmentationClass/ (or SegmentationClassAug/)")
        return missing
    return [piece for piece, sub in (("ImageSets/Segmentation/", d / "ImageSets" / "Segmentation"),
                                     ("SegmentationClass/", d / "SegmentationClass")) if not sub.is_dir()]


def find_voc_root(folder: str | Path) -> tuple[str, Path]:
    """Find the PVOC dataset under ``folder``.

    Returns:
        ``(layout, root)`` with ``layout`` ∈ {``"authors"``, ``"official"``} and ``root`` the folder
        holding the layout's sub-folders (``VOCSegmentation`` or ``VOC2012`` level).

    Raises:
        LeopartError: no PVOC dataset found; when a layout's folder exists but lacks sub-folders,
            the message names it and what is missing (``<folder>/VOCdevkit/VOC2012: found, but
            SegmentationClass/ is missing``).
    """
    base = Path(folder)
    for layout, candidate, check in (
        (AUTHORS, base / "VOCSegmentation", _is_authors_root),
        (AUTHORS, base, _is_authors_root),
        (OFFICIAL, base / "VOCdevkit" / "VOC2012", _is_official_root),
        (OFFICIAL, base / "VOC2012", _is_official_root),
        (OFFICIAL, base, _is_official_root),
    ):
        if check(candidate):
            return layout, candidate
    if not base.is_dir():
        raise LeopartError(f"{base}: dataset folder is missing")
    for layout, candidate in ((AUTHORS, base / "VOCSegmentation"), (OFFICIAL, base / "VOCdevkit" / "VOC2012"),
                              (OFFICIAL, base / "VOC2012")):
        if candidate.is_dir():
            missing = _missing_pieces(layout, candidate)
            raise LeopartError(f"{candidate}: found, but {' and '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} missing")
    if (base / "VOCdevkit").is_dir():
        raise LeopartError(f"{base / 'VOCdevkit'}: found, but VOC2012/ is missing")
    raise LeopartError(f"{base}: no PVOC dataset found (expected VOCSegmentation/ or VOCdevkit/VOC2012/)")


def default_class_names(num_classes: int, class_names: list[str] | None = None) -> list[str]:
    """``class_names`` if given, else PASCAL VOC's names for 21 classes, else ``"class <i>"``
    (index 0 = ``"background"``)."""
    if class_names is not None:
        if len(class_names) != num_classes:
            raise LeopartError(f"dataset.class_names: {len(class_names)} names for {num_classes} classes")
        return list(class_names)
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return ["background"] + [f"class {i}" for i in range(1, num_classes)]


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions PIL can open (``.jpg``, ``.png``, ``.tif``, …)."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def find_images(folder: Path, names: list[str]) -> tuple[list[Path | None], list[str]]:
    """Image file of each name in ``folder``: ``<name><ext>`` with any extension PIL reads,
    case-insensitive, from one directory listing (no per-file stat).

    Returns:
        ``(paths, ambiguous)``: ``paths[i]`` is ``None`` when no image has stem ``names[i]``;
        ``ambiguous`` lists names with several images (``a.jpg`` and ``a.png``), an error for the caller.
    """
    exts = image_extensions()
    by_stem: dict[str, list[str]] = {}
    for entry in (os.listdir(folder) if folder.is_dir() else []):
        stem, dot, ext = entry.rpartition(".")
        if dot and ("." + ext.lower()) in exts:
            by_stem.setdefault(stem, []).append(entry)
    paths: list[Path | None] = []
    ambiguous = []
    for n in names:
        found = by_stem.get(n)
        if found and len(found) > 1:
            ambiguous.append(n)
        paths.append(folder / sorted(found)[0] if found else None)
    return paths, ambiguous


def read_split_list(path: Path) -> list[str]:
    """Names listed in a split file (one per line, blank lines ignored, order kept).

    Raises:
        LeopartError: file missing, empty, or with duplicate names.
    """
    if not path.is_file():
        raise LeopartError(f"{path}: split list is missing")
    try:
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise LeopartError(f"{path}: split list is not a text file") from None
    if not names:
        raise LeopartError(f"{path}: split list is empty")
    if len(set(names)) != len(names):
        dup = next(n for n, c in Counter(names).items() if c > 1)
        raise LeopartError(f"{path}: split list names {dup!r} more than once")
    return names


def _missing(folder: Path, names: list[str], suffix: str) -> list[str]:
    """File names ``<name><suffix>`` absent from ``folder`` (one directory listing, no per-file stat)."""
    present = set(os.listdir(folder)) if folder.is_dir() else set()
    return [n + suffix for n in names if n + suffix not in present]


def _require(folder: Path, names: list[str], suffix: str, split_list: Path, what: str) -> list[Path]:
    missing = _missing(folder, names, suffix)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LeopartError(f"{folder / missing[0]}: {what} listed in {split_list} is missing{more}")
    return [folder / (n + suffix) for n in names]


def voc_split_index(
    folder: str | Path,
    split: str,
    require_images: bool = True,
    expected_count: int | None = None,
    train_masks: str = "SegmentationClassAug",
    num_classes: int = 21,
    class_names: list[str] | None = None,
) -> SplitIndex:
    """Index of one PVOC split (``"train"``, ``"val"``, …) in split-list order.

    Args:
        folder: the data folder (see module docstring for accepted layouts).
        split: split-list name without ``.txt``.
        require_images: if True every listed name must have an image (any extension PIL reads);
            if False the index is mask-only (``image_paths=None``) unless every image exists.
        expected_count: if given, the required number of names (e.g. 1464 / 1449).
        train_masks: authors' layout only — mask folder for split ``"train"``
            (``"SegmentationClassAug"`` as in the authors' code, or ``"SegmentationClass"``).
        num_classes, class_names: the class count and optional names (:func:`default_class_names`).

    Raises:
        LeopartError: no dataset, missing split list, a listed file missing (names the file and the
            split list), wrong count, or an unknown ``train_masks``.
    """
    if train_masks not in TRAIN_MASK_DIRS:
        raise LeopartError(f"train_masks: must be one of {', '.join(TRAIN_MASK_DIRS)}, got {train_masks!r}")
    layout, root = find_voc_root(folder)
    if layout == AUTHORS:
        split_list = root / "sets" / f"{split}.txt"
        # trainaug (train + SBD) masks exist only in SegmentationClassAug
        mask_dir = root / ("SegmentationClassAug" if split == "trainaug"
                           else train_masks if split == "train" else "SegmentationClass")
        image_dir = root / "images"
    else:
        split_list = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        mask_dir = root / "SegmentationClass"
        image_dir = root / "JPEGImages"
    names = read_split_list(split_list)
    if expected_count is not None and len(names) != expected_count:
        raise LeopartError(f"{split_list}: split {split!r} lists {len(names)} names, expected {expected_count}")
    mask_paths = _require(mask_dir, names, ".png", split_list, "mask")
    found, ambiguous = find_images(image_dir, names)
    if ambiguous:
        raise LeopartError(f"{image_dir}: several images named {ambiguous[0]!r} (different extensions); keep one")
    missing = [n for n, path in zip(names, found, strict=True) if path is None]
    image_paths: list[Path] | None = [p for p in found if p is not None] if not missing else None
    if missing and require_images:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LeopartError(f"{image_dir / missing[0]}.*: image listed in {split_list} is missing{more}")
    return SplitIndex(names=names, image_paths=image_paths, mask_paths=mask_paths,
                      class_names=default_class_names(num_classes, class_names))

"""The one dataset interface: an ordered split index, persisted as a Parquet manifest.

A :class:`SplitIndex` lists the images of one split in a fixed order (the order of every tensor the
pipeline saves), with the image path (or none, for mask-only evaluation), the mask path and the
dataset's class names. :func:`write_manifest` stores it as Parquet (columns ``name, image, mask``
as strings, ``image`` null when there are no images) with a JSON sidecar
(:func:`leopart.io.sidecar_path`) holding ``class_names`` and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leopart.errors import LeopartError
from leopart.io import read_json, sidecar_path, write_json, write_parquet

MANIFEST_COLUMNS = ("name", "image", "mask")


@dataclass
class SplitIndex:
    """Ordered file index of one dataset split.

    Attributes:
        names: image names (file stems), in split-list order.
        image_paths: one RGB image per name, or ``None`` when the split is mask-only.
        mask_paths: one label mask per name, or ``None`` when the dataset has no masks (label-free
            run of ``dataset.kind: folder``).
        class_names: class names in label-index order (index 0 = background).
    """

    names: list[str]
    image_paths: list[Path] | None
    mask_paths: list[Path] | None
    class_names: list[str]

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.image_paths is None and self.mask_paths is None:
            raise ValueError("SplitIndex needs images or masks")
        if ((self.mask_paths is not None and len(self.mask_paths) != n)
                or (self.image_paths is not None and len(self.image_paths) != n)):
            raise ValueError(
                f"SplitIndex lengths differ: {n} names, "
                f"{None if self.mask_paths is None else len(self.mask_paths)} masks, "
                f"{None if self.image_paths is None else len(self.image_paths)} images")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def has_masks(self) -> bool:
        """True unless the split has no masks (label-free run)."""
        return self.mask_paths is not None

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)


def write_manifest(path: str | Path, index: SplitIndex, extra: dict | None = None) -> None:
    """Write ``index`` as a Parquet manifest at ``path`` plus its JSON sidecar, both atomically
    (``extra``: more entries of the sidecar, e.g. how the split was made)."""
    images = [str(p) for p in index.image_paths] if index.image_paths is not None else [None] * len(index)
    masks = [str(p) for p in index.mask_paths] if index.mask_paths is not None else [None] * len(index)
    table = pd.DataFrame({
        "name": pd.Series(index.names, dtype="string"),
        "image": pd.Series(images, dtype="string"),
        "mask": pd.Series(masks, dtype="string"),
    })
    write_parquet(path, table)
    write_json(sidecar_path(path), {
        "class_names": list(index.class_names),
        "num_classes": len(index.class_names),
        "count": len(index),
        "has_images": index.image_paths is not None,
        "has_masks": index.mask_paths is not None,
        **(extra or {}),
    })


def read_manifest(path: str | Path) -> SplitIndex:
    """Read a manifest written by :func:`write_manifest`.

    Raises:
        LeopartError: the manifest or its sidecar is missing, unreadable or inconsistent.
    """
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: dataset manifest is missing")
    try:
        table = pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt manifest
        raise LeopartError(f"{p}: cannot read dataset manifest as Parquet ({type(exc).__name__})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise LeopartError(f"{p}: dataset manifest lacks column(s) {', '.join(missing)}")
    meta = read_json(sidecar_path(p), what="dataset manifest sidecar")
    if not isinstance(meta, dict) or not isinstance(meta.get("class_names"), list):
        raise LeopartError(f"{sidecar_path(p)}: sidecar lacks the 'class_names' list")
    if meta.get("count", len(table)) != len(table):
        raise LeopartError(f"{p}: manifest has {len(table)} rows but its sidecar says {meta['count']}")
    if table["name"].isna().any():
        raise LeopartError(f"{p}: dataset manifest has empty name entries")
    mask_null = table["mask"].isna()
    if mask_null.any() and not mask_null.all():
        raise LeopartError(f"{p}: dataset manifest has masks for some rows only")
    has_masks = not mask_null.any() if len(table) else bool(meta.get("has_masks", True))
    img_null = table["image"].isna()
    if img_null.any() and not img_null.all():
        raise LeopartError(f"{p}: dataset manifest has images for some rows only")
    has_images = not img_null.any() if len(table) else bool(meta.get("has_images", True))
    image_paths = [Path(s) for s in table["image"].astype(str)] if has_images else None
    return SplitIndex(
        names=[str(s) for s in table["name"]],
        image_paths=image_paths,
        mask_paths=[Path(s) for s in table["mask"].astype(str)] if has_masks else None,
        class_names=[str(c) for c in meta["class_names"]],
    )

"""Stages of the data family: toy generation, PVOC download/unpack, manifests, ground truth."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from leopart.data.dataset import read_manifest, write_manifest
from leopart.errors import LeopartError
from leopart.io import provenance, save_npy, sidecar_path, write_json
from leopart.stages.runner import params_of

log = logging.getLogger(__name__)

#: Official PVOC 2012 segmentation split sizes (spec §1.1).
PVOC_COUNTS = {"train": 1464, "val": 1449, "trainaug": 10582}


def toy_dataset(smk: Any) -> None:
    """Generate the toy dataset folder ``output[0]``."""
    from leopart.data.toy import generate_toy

    toy = dict(smk.params.toy)
    generate_toy(smk.output[0], toy["n_train"], toy["n_val"], toy["image_size"], toy["seed"])
    log.info("toy dataset written to %s (%s)", smk.output[0], toy)


def _download_with_record(url: str, dest: str, sha256: str | None, record: str, what: str) -> None:
    from leopart.data.download import download, looks_like_html

    if not url:
        raise LeopartError(f"no URL configured for {what}")
    digest = download(url, dest, sha256=sha256)
    if looks_like_html(dest):
        Path(dest).unlink(missing_ok=True)
        raise LeopartError(f"{url}: the server returned an HTML page, not {what} (a Dropbox link needs dl=1)")
    write_json(record, {"url": url, "sha256": digest, "verified": sha256 is not None,
                        "bytes": Path(dest).stat().st_size})
    log.info("%s: sha256 %s (%s)", dest, digest, "verified" if sha256 else "recorded")


def pvoc_download(smk: Any) -> None:
    """Download the authors' PVOC archive and record its checksum."""
    _download_with_record(smk.params.url, smk.output.archive, smk.params.sha256,
                          smk.output.checksum, "the PVOC archive")


def fetch_weights(smk: Any) -> None:
    """Download a checkpoint and record its checksum."""
    _download_with_record(smk.params.url, smk.output.weights, smk.params.sha256,
                          smk.output.checksum, f"a checkpoint for model {smk.wildcards.model!r}")


def pvoc_unpack(smk: Any) -> None:
    """Unpack the PVOC archive safely into ``output[0]``."""
    from leopart.data.download import safe_extract

    safe_extract(smk.input.archive, smk.output[0])


def manifest(smk: Any) -> None:
    """Validate the dataset layout of one split and write its Parquet manifest."""
    split = smk.wildcards.split
    folder = smk.input.dataset
    if smk.params.kind == "toy":
        from leopart.data.toy import toy_split_index

        index = toy_split_index(folder, split)
    else:
        from leopart.data.voc import voc_split_index

        index = voc_split_index(
            folder, split, require_images=bool(smk.params.require_images),
            expected_count=PVOC_COUNTS[split], train_masks=smk.params.train_masks,
        )
    if index.num_classes != smk.params.num_classes:
        raise LeopartError(
            f"{folder}: dataset has {index.num_classes} classes but dataset.num_classes is "
            f"{smk.params.num_classes}"
        )
    if index.image_paths is not None:
        from leopart.data.masks import check_image_mask_sizes

        for image, mask in zip(index.image_paths, index.mask_paths, strict=True):
            check_image_mask_sizes(image, mask)
    write_manifest(smk.output.manifest, index)
    log.info("%s: %d images in split %s", folder, len(index), split)


def ground_truth(smk: Any) -> None:
    """Masks of one split at evaluation resolution, ``(N, S, S)`` uint8 with 255 = ignore."""
    from leopart.data.masks import ground_truth as make_gt

    index = read_manifest(smk.input.manifest)
    gt = make_gt(index.mask_paths, smk.params.num_classes, smk.params.input_size, smk.params.eval_size)
    save_npy(smk.output.gt, gt)
    write_json(sidecar_path(smk.output.gt), provenance(
        stage="ground_truth", params=params_of(smk), inputs={"manifest": smk.input.manifest},
        extra={"shape": list(gt.shape), "names_from": str(smk.input.manifest)},
    ))

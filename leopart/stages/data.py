"""Stages of the data family: toy generation, PVOC download/unpack, manifests, ground truth."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from leopart.data.dataset import read_manifest, write_manifest
from leopart.errors import LeopartError
from leopart.io import save_npy, write_json
from leopart.stages.runner import Sidecars, StageCall

log = logging.getLogger(__name__)

#: Official PVOC 2012 segmentation split sizes (spec §1.1).
PVOC_COUNTS = {"train": 1464, "val": 1449, "trainaug": 10582}


def toy_dataset(call: StageCall) -> None:
    """Generate the toy dataset folder ``output.dataset``."""
    from leopart.data.toy import generate_toy

    toy = dict(call.params["toy"])
    generate_toy(call.output["dataset"], toy["n_train"], toy["n_val"], toy["image_size"], toy["seed"])
    log.info("toy dataset written to %s (%s)", call.output["dataset"], toy)


def _download_with_record(url: str, dest: str, sha256: str | None, record: str, what: str,
                          verify: Callable[[Path], None] | None = None) -> None:
    from leopart.data.download import download, looks_like_html

    if not url:
        raise LeopartError(f"no URL configured for {what}")
    digest = download(url, dest, sha256=sha256, verify=verify)
    if looks_like_html(dest):
        Path(dest).unlink(missing_ok=True)
        raise LeopartError(f"{url}: the server returned an HTML page, not {what} (a Dropbox link needs dl=1)")
    write_json(record, {"url": url, "sha256": digest, "verified": sha256 is not None,
                        "bytes": Path(dest).stat().st_size})
    log.info("%s: sha256 %s (%s)", dest, digest, "verified" if sha256 else "recorded")


def pvoc_download(call: StageCall) -> None:
    """Download the authors' PVOC archive (kept only if it reads as a whole) and record its checksum."""
    from leopart.data.download import check_archive

    _download_with_record(call.params["url"], call.output["archive"], call.params["sha256"],
                          call.output["checksum"], "the PVOC archive", verify=check_archive)


def fetch_weights(call: StageCall) -> None:
    """Download a checkpoint and record its checksum."""
    _download_with_record(call.params["url"], call.output["weights"], call.params["sha256"],
                          call.output["checksum"], f"a checkpoint for model {call.wildcards['model']!r}")


def pvoc_unpack(call: StageCall) -> None:
    """Unpack the PVOC archive safely into ``output.folder``.

    The archive is the download rule's output: if it is not a readable archive it is removed with
    its checksum record, so the next run downloads it again.
    """
    from leopart.data.download import safe_extract

    archive = call.input["archive"]
    safe_extract(archive, call.output["folder"], remove_invalid=[archive, f"{archive}.json"])


def manifest(call: StageCall) -> None:
    """Validate the dataset layout of one split and write its Parquet manifest (own sidecar)."""
    split = call.wildcards["split"]
    folder = call.input["dataset"]
    extra = None
    if call.params["kind"] == "toy":
        from leopart.data.toy import toy_split_index

        index = toy_split_index(folder, split)
    elif call.params["kind"] == "folder":
        from leopart.data.folder import folder_split_index

        index, record = folder_split_index(
            dict(call.params["folder"]), split, int(call.params["num_classes"]),
            class_names=call.params.get("class_names"), background_class=int(call.params["background_class"]))
        extra = {"split": record}
    else:
        from leopart.data.voc import voc_split_index

        index = voc_split_index(
            folder, split, require_images=bool(call.params["require_images"]),
            expected_count=PVOC_COUNTS[split] if call.params["voc2012"] else None,
            train_masks=call.params["train_masks"], num_classes=int(call.params["num_classes"]),
            class_names=call.params.get("class_names"),
        )
    if index.num_classes != call.params["num_classes"]:
        raise LeopartError(
            f"{folder}: dataset has {index.num_classes} classes but dataset.num_classes is "
            f"{call.params['num_classes']}"
        )
    if index.image_paths is not None and index.mask_paths is not None:
        from leopart.data.masks import check_image_mask_sizes

        for image, mask in zip(index.image_paths, index.mask_paths, strict=True):
            check_image_mask_sizes(image, mask)
    elif index.image_paths is not None:
        from leopart.data.masks import check_image_readable

        for image in index.image_paths:
            check_image_readable(image)
    write_manifest(call.output["manifest"], index, extra)
    log.info("%s: %d images in split %s", folder, len(index), split)


def ground_truth(call: StageCall) -> Sidecars:
    """Masks of one split at evaluation resolution, ``(N, S, S)`` uint8 with 0 = background and
    255 = ignore (``dataset.background_class`` / ``ignore_index`` remapped to them).

    Without masks (a label-free folder) every pixel is 255: every score downstream is NaN, and
    the table says that its rows need labels.
    """
    from leopart.data.masks import ground_truth as make_gt

    p = call.params
    index = read_manifest(call.input["manifest"])
    if index.mask_paths is None:
        size = int(p["eval_size"])
        save_npy(call.output["gt"], np.full((len(index), size, size), 255, dtype=np.uint8))
        log.info("split %s has no masks: ground truth is all 255 (ignore)", call.wildcards.get("split", "?"))
        return {"gt": {"shape": [len(index), size, size], "names_from": str(call.input["manifest"]),
                       "masks": False}}
    gt = make_gt(index.mask_paths, p["num_classes"], p["input_size"], p["eval_size"],
                 background_class=int(p.get("background_class", 0)), ignore_index=int(p.get("ignore_index", 255)))
    if gt.size and (gt == 255).all():
        log.warning("split %s: every ground-truth pixel is 255 (ignore): its mIoU will be NaN, not 0",
                    call.wildcards.get("split", "?"))
    save_npy(call.output["gt"], gt)
    return {"gt": {"shape": list(gt.shape), "names_from": str(call.input["manifest"])}}

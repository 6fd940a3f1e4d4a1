"""Stages of the data family: toy generation, PVOC download/unpack, manifests, ground truth."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

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
    if call.params["kind"] == "toy":
        from leopart.data.toy import toy_split_index

        index = toy_split_index(folder, split)
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
    if index.image_paths is not None:
        from leopart.data.masks import check_image_mask_sizes

        for image, mask in zip(index.image_paths, index.mask_paths, strict=True):
            check_image_mask_sizes(image, mask)
    write_manifest(call.output["manifest"], index)
    log.info("%s: %d images in split %s", folder, len(index), split)


def ground_truth(call: StageCall) -> Sidecars:
    """Masks of one split at evaluation resolution, ``(N, S, S)`` uint8 with 255 = ignore."""
    from leopart.data.masks import ground_truth as make_gt

    p = call.params
    index = read_manifest(call.input["manifest"])
    gt = make_gt(index.mask_paths, p["num_classes"], p["input_size"], p["eval_size"])
    if gt.size and (gt == 255).all():
        log.warning("split %s: every ground-truth pixel is 255 (ignore): its mIoU will be NaN, not 0",
                    call.wildcards.get("split", "?"))
    save_npy(call.output["gt"], gt)
    return {"gt": {"shape": list(gt.shape), "names_from": str(call.input["manifest"])}}

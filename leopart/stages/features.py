"""Stages of the feature family: inference, imports, attention masks, standardisation + PCA."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from leopart.errors import LeopartError
from leopart.io import load_npy, save_npy
from leopart.stages.runner import Sidecars, StageCall

log = logging.getLogger(__name__)


def extract_features(call: StageCall) -> Sidecars:
    """Tokens ``(N, h, w, D)`` and CLS attention ``(N, heads, h*w)`` of one model and split.

    With ``params["shard_size"]`` set and ``wildcards["shard"]`` given, only that shard's images
    (``shard · shard_size`` up to the next shard's first image) are extracted; :func:`merge_features`
    concatenates the shards.
    """
    import torch
    from torch.utils.data import Subset

    from leopart.data.dataset import read_manifest  # pandas: imported only where needed
    from leopart.data.images import ImageDataset
    from leopart.features.extract import extract_features as run_extraction, shard_range
    from leopart.models.build import build_model

    p = call.params
    index = read_manifest(call.input["manifest"])
    if index.image_paths is None:
        raise LeopartError(f"{call.input['manifest']}: split has no images; configure embeddings instead")
    if p["device"] == "cuda" and not torch.cuda.is_available():
        raise LeopartError("features.device = 'cuda' but no CUDA device is available")
    weights = call.input["weights"] or None  # [] for a randomly initialised model
    model = build_model(dict(p["model"]), str(weights) if weights else None)
    dataset = ImageDataset(index.image_paths, p["input_size"])
    extra: dict[str, Any] = {}
    if "shard" in call.wildcards:
        start, stop = shard_range(len(dataset), p.get("shard_size"), int(call.wildcards["shard"]))
        dataset = Subset(dataset, range(start, stop))
        extra = {"shard": int(call.wildcards["shard"]), "images": [start, stop]}
    info = run_extraction(model, dataset, call.output["tokens"], call.output["cls_attn"],
                          batch_size=p["batch_size"], device=p["device"], num_workers=p["num_workers"],
                          precision=p.get("precision", "fp32"))
    # timings go to the log (and the benchmark file), not the sidecar, whose bytes must not
    # change between identical runs
    seconds, rate = info.pop("seconds"), info.pop("images_per_second")
    log.info("%d images in %.1f s (%.1f img/s)", info["num_images"], seconds, rate)
    return {"tokens": {"result": info, **extra}}


def merge_features(call: StageCall) -> Sidecars:
    """Concatenate the shards of :func:`extract_features` into the split's tokens and CLS attention.

    The merged files equal the unsharded extraction byte for byte when the shard size is a
    multiple of the batch size (enforced by the config check).
    """
    from leopart.data.dataset import read_manifest  # pandas: imported only where needed
    from leopart.io import concat_npy

    n = len(read_manifest(call.input["manifest"]))
    tokens = concat_npy(list(call.input["tokens"]), call.output["tokens"], what="tokens")
    attn = concat_npy(list(call.input["cls_attn"]), call.output["cls_attn"], what="CLS attention")
    if tokens[0] != n or attn[0] != n:
        raise LeopartError(f"{call.output['tokens']}: shards hold {tokens[0]} images, the split has {n}")
    return {"tokens": {"shards": len(call.input["tokens"]), "shape": list(tokens)}}


def import_embeddings(call: StageCall) -> Sidecars:
    """Convert pre-computed embeddings (.npy or the authors' .pt) into ``(N, h, w, D)`` .npy,
    chunk by chunk (float16 kept, other dtypes as float32)."""
    from leopart.data.dataset import read_manifest  # pandas: imported only where needed
    from leopart.features.external import import_embeddings as run_import

    n = len(read_manifest(call.input["manifest"]))
    info = run_import(call.input["embeddings"], call.output["tokens"], expected_count=n)
    return {"tokens": info}


def _grid_of(n_tokens: int, path: str) -> tuple[int, int]:
    side = int(round(np.sqrt(n_tokens)))
    if side * side != n_tokens:
        raise LeopartError(f"{path}: {n_tokens} tokens per image is not a square grid")
    return side, side


def attention_masks(call: StageCall) -> Sidecars:
    """Foreground hint masks ``(N, h, w)`` uint8 from last-block CLS attention (spec §4.3)."""
    from leopart.features.attention import attention_masks as make_masks

    p = call.params
    cls_attn = load_npy(call.input["cls_attn"], ndim=3, dtype_kind="f", what="CLS attention")
    grid = _grid_of(cls_attn.shape[2], call.input["cls_attn"])
    masks = make_masks(np.asarray(cls_attn), grid, threshold=p["threshold"], blur_sigma=p["blur_sigma"],
                       min_component=p["min_component"])
    save_npy(call.output["masks"], masks)
    log.info("attention masks %s: foreground fraction %.3f", masks.shape, masks.mean())
    return {"masks": {"shape": list(masks.shape), "fg_fraction": float(masks.mean())}}


def import_attention_masks(call: StageCall) -> Sidecars:
    """The authors' pre-computed attention masks as ``(N, h, w)`` uint8, converted chunk by chunk."""
    from leopart.data.dataset import read_manifest  # pandas: imported only where needed
    from leopart.features.attention import import_attention_masks as run_import

    n = len(read_manifest(call.input["manifest"]))
    return {"masks": run_import(call.input["masks"], call.output["masks"], expected_count=n)}


def first_val_images(array: np.ndarray, limit: int | None) -> np.ndarray:
    """The first ``limit`` images of val (``overcluster.val_limit``; None = all of them)."""
    if limit is None:
        return array
    if limit > array.shape[0]:
        raise LeopartError(f"config: overcluster.val_limit = {limit} exceeds the {array.shape[0]} val images")
    return array[:limit]


def pca(call: StageCall) -> Sidecars:
    """Standardise + PCA fitted on the given splits: val (or its first ``val_limit`` images) or
    train+val; ``params.fit`` names that protocol."""
    from leopart.features.pca import fit_pca, fit_standardiser, save_pca, transform_to

    cfg = dict(call.params["pca"])
    splits = [s for s in ("train", "val") if s in call.input]
    arrays = [load_npy(call.input[s], ndim=4, dtype_kind="f", what="tokens") for s in splits]
    if call.params["val_limit"] is not None:
        arrays = [first_val_images(arrays[0], call.params["val_limit"])]
    mean, scale = fit_standardiser(arrays)
    model = fit_pca(arrays, mean, scale, dim=cfg["dim"], max_points_per_d=cfg["max_points_per_d"],
                    seed=cfg["seed"])
    transform_to(arrays, model, [call.output[s] for s in splits])
    save_pca(call.output["model"], model)
    return {s: {"fit": call.params["fit"], "fitted_on_images": [int(a.shape[0]) for a in arrays],
                "shape": [int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2]), int(cfg["dim"])],
                "explained_variance": [float(v) for v in model.eigenvalues]}
            for s, arr in zip(splits, arrays, strict=True)}

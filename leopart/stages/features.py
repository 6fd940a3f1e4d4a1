"""Stages of the feature family: inference, imports, attention masks, standardisation + PCA."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from leopart.data.dataset import read_manifest
from leopart.errors import LeopartError
from leopart.io import load_npy, npy_writer, provenance, save_npy, sidecar_path, write_json
from leopart.stages.runner import params_of

log = logging.getLogger(__name__)


def build_model(spec: dict[str, Any], weights_path: str | None) -> Any:
    """Build a model from its config entry (``models.<name>``) and load its weights."""
    from leopart.models.checkpoints import load_backbone_weights
    from leopart.models.vit import build_vit

    weights = spec["weights"]
    custom = spec.get("custom") or {}
    if spec["arch"] == "custom":
        model = build_vit("custom", patch_size=custom["patch_size"], embed_dim=custom["embed_dim"],
                          depth=custom["depth"], num_heads=custom["num_heads"], seed=weights.get("seed", 0))
    else:
        model = build_vit(spec["arch"], seed=weights.get("seed", 0))
    if weights["source"] != "random":
        if not weights_path:
            raise LeopartError(f"model {spec.get('label', spec['arch'])!r}: no checkpoint file")
        report = load_backbone_weights(model, weights_path, weights["source"], trust=weights.get("trust", False))
        log.info("loaded %s weights from %s: %s", weights["source"], weights_path, report)
    else:
        log.info("random initialisation (seed %s)", weights.get("seed", 0))
    return model


def extract_features(smk: Any) -> None:
    """Tokens ``(N, h, w, D)`` and CLS attention ``(N, heads, h*w)`` of one model and split."""
    import torch

    from leopart.data.images import ImageDataset
    from leopart.features.extract import extract_features as run_extraction

    from leopart.stages.runner import set_threads

    set_threads(smk.threads)
    index = read_manifest(smk.input.manifest)
    if index.image_paths is None:
        raise LeopartError(f"{smk.input.manifest}: split has no images; configure embeddings instead")
    device = smk.params.device
    if device == "cuda" and not torch.cuda.is_available():
        raise LeopartError("features.device = 'cuda' but no CUDA device is available")
    weights = smk.input.weights if smk.input.weights else None
    model = build_model(dict(smk.params.model), str(weights) if weights else None)
    dataset = ImageDataset(index.image_paths, smk.params.input_size)
    info = run_extraction(model, dataset, smk.output.tokens, smk.output.cls_attn,
                          batch_size=smk.params.batch_size, device=device,
                          num_workers=smk.params.num_workers)
    record = provenance(stage="extract_features", params=params_of(smk),
                        inputs={"manifest": smk.input.manifest, **({"weights": weights} if weights else {})},
                        extra={"result": info})
    write_json(sidecar_path(smk.output.tokens), record)


def import_embeddings(smk: Any) -> None:
    """Convert pre-computed embeddings (.npy or the authors' .pt) into ``(N, h, w, D)`` .npy."""
    from leopart.features.external import load_embeddings

    n = len(read_manifest(smk.input.manifest))
    emb = load_embeddings(smk.input.embeddings, expected_count=n)
    with npy_writer(smk.output.tokens, emb.shape, np.float32) as out:
        for start in range(0, emb.shape[0], 64):
            out[start:start + 64] = emb[start:start + 64]
    write_json(sidecar_path(smk.output.tokens), provenance(
        stage="import_embeddings", inputs={"embeddings": smk.input.embeddings},
        extra={"shape": list(emb.shape)}))


def _grid_of(n_tokens: int, path: str) -> tuple[int, int]:
    side = int(round(np.sqrt(n_tokens)))
    if side * side != n_tokens:
        raise LeopartError(f"{path}: {n_tokens} tokens per image is not a square grid")
    return side, side


def attention_masks(smk: Any) -> None:
    """Foreground hint masks ``(N, h, w)`` uint8 from last-block CLS attention (spec §4.3)."""
    from leopart.features.attention import attention_masks as make_masks

    cls_attn = load_npy(smk.input.cls_attn, ndim=3, dtype_kind="f", what="CLS attention")
    grid = _grid_of(cls_attn.shape[2], smk.input.cls_attn)
    masks = make_masks(np.asarray(cls_attn), grid, threshold=smk.params.threshold,
                       blur_sigma=smk.params.blur_sigma, min_component=smk.params.min_component)
    save_npy(smk.output.masks, masks)
    write_json(sidecar_path(smk.output.masks), provenance(
        stage="attention_masks", params=params_of(smk), inputs={"cls_attn": smk.input.cls_attn},
        extra={"shape": list(masks.shape), "fg_fraction": float(masks.mean())}))
    log.info("attention masks %s: foreground fraction %.3f", masks.shape, masks.mean())


def import_attention_masks(smk: Any) -> None:
    """The authors' pre-computed attention masks as ``(N, h, w)`` uint8."""
    from leopart.features.attention import load_attention_masks

    n = len(read_manifest(smk.input.manifest))
    masks = load_attention_masks(smk.input.masks, expected_count=n)
    save_npy(smk.output.masks, masks)
    write_json(sidecar_path(smk.output.masks), provenance(
        stage="import_attention_masks", inputs={"masks": smk.input.masks},
        extra={"shape": list(masks.shape), "fg_fraction": float(masks.mean())}))


def pca(smk: Any) -> None:
    """Standardise + PCA: fitted on the given splits (val only, its first N images, or train+val)."""
    from leopart.features.pca import fit_pca, fit_standardiser, save_pca, transform_to

    cfg = dict(smk.params.pca)
    splits = [s for s in ("train", "val") if s in smk.input.keys()]
    arrays = [load_npy(smk.input[s], ndim=4, dtype_kind="f", what="tokens") for s in splits]
    fit = smk.wildcards.get("fit", "trainval")
    limit = re.fullmatch(r"val-first(\d+)", fit)
    if limit:
        n = int(limit.group(1))
        if n > arrays[0].shape[0]:
            raise LeopartError(f"config: overcluster.val_limit = {n} exceeds the {arrays[0].shape[0]} val images")
        arrays = [arrays[0][:n]]
    mean, scale = fit_standardiser(arrays)
    model = fit_pca(arrays, mean, scale, dim=cfg["dim"], max_points_per_d=cfg.get("max_points_per_d"),
                    seed=cfg.get("seed", 1234))
    transform_to(arrays, model, [smk.output[s] for s in splits])
    save_pca(smk.output.model, model)
    for s, arr in zip(splits, arrays, strict=True):
        write_json(sidecar_path(smk.output[s]), provenance(
            stage="pca", params=params_of(smk), inputs={s: smk.input[s] for s in splits},
            extra={"fit": fit, "fitted_on_images": [int(a.shape[0]) for a in arrays],
                   "shape": [int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2]), int(cfg["dim"])],
                   "explained_variance": [float(v) for v in model.eigenvalues]}))

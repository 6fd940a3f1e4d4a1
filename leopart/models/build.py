"""The one way to make a backbone: architecture + weights → ViT.

Feature extraction, both trainers and backbone validation all build their ViTs with
:func:`build_backbone`. :func:`build_model` reads the pipeline config's ``models.<name>`` entry
into its arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from leopart.errors import LeopartError
from leopart.models.checkpoints import load_backbone_weights
from leopart.models.vit import build_vit

log = logging.getLogger(__name__)

#: The architecture keys of a ``models.<name>.custom`` entry.
CUSTOM_KEYS = ("patch_size", "embed_dim", "depth", "num_heads")


def build_backbone(arch: Mapping[str, Any], weights: Mapping[str, Any] | None = None, seed: int = 0,
                   name: str | None = None) -> nn.Module:
    """Build a ViT and load its weights.

    Args:
        arch: :func:`~leopart.models.vit.build_vit` keywords: ``arch`` (a timm ViT name or
            ``"custom"``) and optionally ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
            ``img_size`` (``None`` keeps the named architecture's value).
        weights: ``source`` (``random``, ``dino``, ``leopart`` or ``local``; default random),
            ``path`` (the checkpoint file, required unless random) and ``trust`` (see
            :func:`~leopart.models.checkpoints.load_checkpoint_file`).
        seed: seed of the random initialisation (the global torch RNG is left untouched).
        name: how error messages call the model (default: its ``arch``).
    """
    weights = weights or {}
    model = build_vit(seed=seed, **dict(arch))
    source = weights.get("source", "random")
    if source == "random":
        log.info("random initialisation (seed %s)", seed)
        return model
    path = weights.get("path")
    if not path:
        raise LeopartError(f"model {name or arch['arch']!r}: weights.source is {source!r} but no checkpoint file")
    report = load_backbone_weights(model, path, source, trust=bool(weights.get("trust", False)))
    log.info("loaded %s weights from %s: %s", source, path, report)
    return model


def build_model(entry: Mapping[str, Any], weights_path: str | None) -> nn.Module:
    """The backbone of a config ``models.<name>`` entry, with its weights read from ``weights_path``
    (the entry's ``weights.path``, or the file its ``weights.url`` was fetched to).

    ``entry["custom"]`` is the shape of an ``arch: custom`` ViT, or, for a timm name, overrides of
    the named shape (e.g. a smaller ViT of the DINOv2-with-registers family)."""
    if entry.get("arch") is None or entry.get("weights") is None:
        raise LeopartError(f"model {entry.get('label', '?')!r} has embeddings only (no arch/weights): "
                           "there is no backbone to build")
    arch: dict[str, Any] = {"arch": entry["arch"]}
    custom = entry.get("custom") or {}  # the shape of `custom`, or overrides of a timm name's
    arch.update({k: custom.get(k) for k in CUSTOM_KEYS})
    weights = dict(entry["weights"])
    return build_backbone(arch, {**weights, "path": weights_path}, seed=int(weights.get("seed", 0)),
                          name=entry.get("label", entry["arch"]))

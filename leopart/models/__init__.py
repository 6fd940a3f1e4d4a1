"""Backbones: the DINO-style ViT (built from timm modules) and checkpoint loading.

- :mod:`leopart.models.vit` — ``build_vit``, ``interpolate_pos_embed_dino``,
  ``tokens_and_attention`` (patch tokens + last-block CLS attention, spec §2.1).
- :mod:`leopart.models.checkpoints` — safe checkpoint reading and backbone-weight extraction for
  DINO / Leopart / local checkpoints (spec §2.3, §11.8).

Submodules are imported by their users so that importing the package stays cheap.
"""

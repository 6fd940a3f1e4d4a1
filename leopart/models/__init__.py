"""Backbones: the DINO-style ViT (built from timm modules) and checkpoint loading.

- :mod:`leopart.models.vit` — ``build_vit``, ``interpolate_pos_embed_dino``,
  ``tokens_and_attention`` (patch tokens + last-block CLS attention, spec §2.1), ``vit_tokens``
  and ``set_drop_path`` for training.
- :mod:`leopart.models.build` — ``build_backbone`` (architecture + weights → ViT), the one
  builder of extraction, training and validation; ``build_model`` for a config ``models.<name>``
  entry.
- :mod:`leopart.models.checkpoints` — safe checkpoint reading and backbone-weight extraction for
  DINO / Leopart / local checkpoints (spec §2.3, §11.8).

Submodules are imported by their users so that importing the package stays cheap.
"""

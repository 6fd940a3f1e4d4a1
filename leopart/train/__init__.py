"""Training: Leopart fine-tuning (spec §3) and DINO pretraining for new domains.

- :mod:`leopart.train.multicrop` — ``LeopartCrops`` (2 global + 4 local crops with boxes in
  original pixels, bounded overlap resampling), ``relative_boxes``, ``collate_crops``,
  ``forward_by_resolution``, ``CropDataset`` / ``ImagePathDataset`` / ``ToyImageDataset``.
- :mod:`leopart.train.sinkhorn` — ``sinkhorn(scores, eps, iters, world_size, all_reduce)``
  (log-domain, DDP-aware).
- :mod:`leopart.train.heads` — ``ProjectionHead``, ``Prototypes`` (``normalize_()``), ``DINOHead``.
- :mod:`leopart.train.leopart_loss` — ``LeopartLoss`` (queue, fg masks, RoI-aligned masked CE),
  ``roi_align_boxes``.
- :mod:`leopart.train.schedules` — ``cosine_schedule``, ``param_groups``, ``set_schedule_values``.
- :mod:`leopart.train.model_ema` — ``ema_update_`` (the teacher's EMA of the student).
- :mod:`leopart.train.trainer` — ``BaseTrainer``: set-up, loop, checkpoints and resumption
  shared by both trainers; built on :mod:`~leopart.train.checkpoint` (atomic save, weights-only
  load, RNG state), :mod:`~leopart.train.distributed` (ranks, devices, DDP, data order),
  :mod:`~leopart.train.log` (CSV/Parquet log, loss curve) and :mod:`~leopart.train.signals`.
- :mod:`leopart.train.leopart_trainer` — ``LeopartTrainer``, ``train_leopart(config, dataset,
  out_dir)``.
- :mod:`leopart.train.dino` — ``DINOTrainer``, ``train_dino(config, dataset, out_dir)``.

The two entry points are importable from here lazily (``from leopart.train import
train_leopart``) so that importing the package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_leopart", "train_dino", "LeopartTrainer", "DINOTrainer"]


def __getattr__(name: str) -> Any:
    if name in ("train_leopart", "LeopartTrainer"):
        from leopart.train import leopart_trainer

        return getattr(leopart_trainer, name)
    if name in ("train_dino", "DINOTrainer"):
        from leopart.train import dino

        return getattr(dino, name)
    raise AttributeError(f"module 'leopart.train' has no attribute {name!r}")

""":class:`BaseTrainer`: what the Leopart and DINO trainers share.

Set-up: the strict config merge, the crop dataset, device and seed, the backbone
(:func:`leopart.models.build.build_backbone`), the frozen teacher, drop-path, the DDP wrapper.
Loop: epochs/steps over a seeded data order (:func:`~leopart.train.distributed.epoch_batches`),
tqdm progress, per-step log rows, checkpoints every N epochs and/or steps and on SIGINT/SIGTERM,
all written atomically, and :meth:`BaseTrainer.resume` restoring models, optimiser, step and RNG
states so that a resumed CPU run continues bit-identically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from leopart.config import merge_config
from leopart.errors import LeopartError
from leopart.io import write_json
from leopart.models.build import build_backbone
from leopart.models.vit import set_drop_path
from leopart.train.checkpoint import (
    CHECKPOINT_FORMAT,
    check_same_run,
    load_torch,
    plain_config,
    rank_path,
    rng_state,
    save_torch,
    set_rng_state,
)
from leopart.train.distributed import all_reduce_mean, dist_info, epoch_batches, resolve_device, wrap_ddp
from leopart.train.log import write_log
from leopart.train.multicrop import CropDataset, LeopartCrops, collate_crops
from leopart.train.signals import SignalGuard, TrainingInterrupted


class BaseTrainer:
    """Student/teacher training with checkpoints, logs and resumption.

    A subclass sets :attr:`kind` and :attr:`DEFAULT_CONFIG` and implements :meth:`make_crops`,
    :meth:`build_models` (student and teacher, each with a ``backbone``), :meth:`build_optimisation`
    (``loss``, ``optimizer`` and the per-step schedules) and :meth:`train_step` (one optimiser step
    on a collated batch, returning the log values).

    Config keys used here: ``seed``, ``model``, ``init``, ``drop_path_rate``, ``crops``,
    ``device``, ``precision``, ``batch_size`` (per process), ``epochs``, ``num_workers``,
    ``checkpoint_every_epochs``, ``checkpoint_every_steps``, ``progress``.

    Args:
        config: merged into :attr:`DEFAULT_CONFIG` (:func:`leopart.config.merge_config`, strict:
            unknown keys are errors).
        dataset: images (PIL / path / uint8 array items), wrapped in a :class:`CropDataset` unless
            it already is one.
        out_dir: where checkpoints, logs and the exported backbones go (None: nothing written).
        backbone: a ViT to train instead of building ``config.model`` with ``config.init``.
    """

    kind: ClassVar[str] = "base"
    DEFAULT_CONFIG: ClassVar[dict[str, Any]] = {}
    #: config keys whose value must be one of a few names
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: checkpoint key of the student's state dict (the teacher's is ``teacher``)
    student_key: ClassVar[str] = "student"

    config: dict[str, Any]
    crops: LeopartCrops
    device: torch.device
    #: the student; ``student`` is the same module as the forward pass calls it
    #: (DistributedDataParallel in a DDP run)
    student_module: nn.Module
    student: nn.Module
    teacher: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    #: teacher EMA momentum per step
    momentum: np.ndarray

    def __init__(self, config: Mapping[str, Any] | None, dataset: Any, out_dir: str | Path | None = None,
                 backbone: nn.Module | None = None) -> None:
        cfg = merge_config(self.DEFAULT_CONFIG, config)
        for key, allowed in self.CHOICES.items():
            if cfg[key] not in allowed:
                names = " or ".join(repr(a) for a in allowed)
                raise LeopartError(f"{key}: expected {names}, got {cfg[key]!r}")
        crops = self.make_crops(cfg["crops"])
        if not isinstance(dataset, CropDataset):
            dataset = CropDataset(dataset, crops, seed=cfg["seed"])
        self.config = cfg
        self.dataset = dataset
        self.crops = dataset.transform
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.world, self.rank = dist_info()
        self.seed = int(cfg["seed"])
        self.batch_size = int(cfg["batch_size"])
        self.epochs = int(cfg["epochs"])
        if self.batch_size < 1 or self.epochs < 1:
            raise LeopartError(f"batch_size/epochs: must be >= 1, got {self.batch_size}/{self.epochs}")
        n = len(dataset)
        self.iters_per_epoch = n // (self.world * self.batch_size)
        if self.iters_per_epoch == 0:
            raise LeopartError(
                f"batch_size: the dataset has {n} images, fewer than one global batch "
                f"({self.world} process(es) x {self.batch_size})"
            )
        self.total_steps = self.epochs * self.iters_per_epoch
        self.step = 0
        self.log_rows: list[dict[str, Any]] = []
        self.generator = torch.Generator()  # for sampling inside the loss (queue pushes)
        self.generator.manual_seed(self.seed + 1_000_003 * self.rank)

        self.device = resolve_device(cfg["device"])
        self.precision = cfg["precision"]
        torch.manual_seed(self.seed)
        if backbone is None:
            backbone = build_backbone(cfg["model"], cfg["init"], seed=self.seed)
        student, teacher = self.build_models(backbone)
        set_drop_path(student.backbone, cfg["drop_path_rate"])
        set_drop_path(teacher.backbone, 0.0)
        self.student_module = student.to(self.device)
        self.teacher = teacher.to(self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = wrap_ddp(self.student_module, self.device)
        self.build_optimisation()

    # ---------------------------------------------------------------- to implement

    def make_crops(self, cfg: Mapping[str, Any]) -> LeopartCrops:
        """The multi-crop transform from the ``crops`` config section."""
        raise NotImplementedError

    def build_models(self, backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
        """Student and teacher (each with a ``backbone`` attribute) around ``backbone``; the
        teacher's backbone starts as a copy of it."""
        raise NotImplementedError

    def build_optimisation(self) -> None:
        """Set ``loss``, ``optimizer`` and the per-step schedules (``momentum`` among them)."""
        raise NotImplementedError

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for train_step

    def schedule_index(self) -> int:
        """This step's index into the schedules; an error past their end."""
        if self.step >= self.total_steps:
            raise LeopartError(f"epochs: step {self.step} is beyond the schedule of {self.total_steps} steps")
        return self.step

    def loss_value(self, loss: torch.Tensor, hint: str) -> float:
        """The loss as a float, averaged over processes; an error naming ``hint`` if not finite."""
        value = all_reduce_mean(float(loss.detach()), self.device)
        if not math.isfinite(value):
            raise LeopartError(f"training diverged: loss is {value} at step {self.step} ({hint})")
        return value

    # ---------------------------------------------------------------- state

    def model_state(self) -> dict[str, Any]:
        """Student, teacher, loss state (centre, queue) and optimiser."""
        return {
            self.student_key: self.student_module.state_dict(),
            "teacher": self.teacher.state_dict(),
            "loss_state": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_model_state(self, state: Mapping[str, Any]) -> None:
        self.student_module.load_state_dict(state[self.student_key])
        self.teacher.load_state_dict(state["teacher"])
        self.loss.load_state_dict(state["loss_state"])
        self.optimizer.load_state_dict(state["optimizer"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.kind,
            "step": self.step,
            "epoch": self.step // self.iters_per_epoch,
            "total_steps": self.total_steps,
            "world_size": self.world,
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "log": list(self.log_rows),
            "config": plain_config(self.config),
            **self.model_state(),
        }

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the full training state atomically (rank 0 to ``path``; rank r > 0 its own RNG and
        queue state to ``<stem>.rank<r>.pt``)."""
        save_torch(rank_path(path, self.rank), self.state_dict())

    def resume(self, path: str | Path) -> None:
        """Restore models, optimiser, loss state, step, log and RNG states from a checkpoint."""
        p = Path(path)
        own = rank_path(p, self.rank)
        if own.is_file():
            p = own
        state = load_torch(p)
        if state.get("kind") != self.kind:
            raise LeopartError(f"{p}: checkpoint is a {state.get('kind')!r} run, not {self.kind!r}")
        if int(state["total_steps"]) != self.total_steps:
            raise LeopartError(
                f"{p}: checkpoint was made for {state['total_steps']} total steps, this config has "
                f"{self.total_steps} (epochs/batch_size/dataset size changed?)"
            )
        check_same_run(state.get("config", {}), plain_config(self.config), p)
        self.load_model_state(state)
        self.step = int(state["step"])
        self.log_rows = list(state.get("log", []))
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])

    def export(self, out_dir: Path) -> None:
        """Write ``backbone_student.pt`` / ``backbone_teacher.pt`` (plain ViT state dicts, loadable
        with ``load_backbone_weights(source="local")``) and ``train_summary.json`` into ``out_dir``."""
        save_torch(out_dir / "backbone_student.pt", self.student_module.backbone.state_dict())
        save_torch(out_dir / "backbone_teacher.pt", self.teacher.backbone.state_dict())
        last = self.log_rows[-1] if self.log_rows else {}
        write_json(out_dir / "train_summary.json", {
            "kind": self.kind, "steps": self.step, "epochs": self.epochs, "world_size": self.world,
            "iters_per_epoch": self.iters_per_epoch, "final_loss": last.get("loss"),
            "config": plain_config(self.config),
        })

    # ---------------------------------------------------------------- loop

    def run(self, resume: str | Path | None = None, max_steps: int | None = None) -> dict[str, Any]:
        """Resume (``"auto"``: from ``out_dir/checkpoints/last.pt`` if it exists), train, and wait
        for every DDP rank. Returns the summary of :meth:`fit`."""
        if resume == "auto":
            last = self.out_dir / "checkpoints" / "last.pt" if self.out_dir is not None else None
            resume = last if last is not None and last.is_file() else None
        if resume is not None:
            self.resume(resume)
        summary = self.fit(max_steps=max_steps)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return summary

    def _loader(self, epoch: int, start_iter: int) -> DataLoader:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        batches = epoch_batches(len(self.dataset), self.batch_size, self.world, self.rank, self.seed, epoch)
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        nw = int(self.config.get("num_workers", 0))
        return DataLoader(
            self.dataset, batch_sampler=batches[start_iter:], collate_fn=collate_crops, num_workers=nw,
            generator=g, pin_memory=False, persistent_workers=False,
        )

    def fit(self, max_steps: int | None = None) -> dict[str, Any]:
        """Train until the end of the schedule (or ``max_steps`` more steps).

        Checkpoints: ``checkpoints/epoch_XXXX.pt`` every ``checkpoint_every_epochs`` epochs,
        ``checkpoints/step_XXXXXXX.pt`` every ``checkpoint_every_steps`` steps (if set),
        ``checkpoints/last.pt`` at every checkpoint and on interruption, ``final.pt`` plus the
        exported artefacts at the end. On SIGINT/SIGTERM the current step finishes, ``last.pt``
        and the logs are written, then :class:`TrainingInterrupted` (a SystemExit) is raised.
        """
        from tqdm.auto import tqdm

        every_ep = self.config.get("checkpoint_every_epochs")
        every_st = self.config.get("checkpoint_every_steps")
        ckdir = None if self.out_dir is None else self.out_dir / "checkpoints"
        stop_at = self.total_steps if max_steps is None else min(self.total_steps, self.step + int(max_steps))
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.kind, unit="step",
                   disable=not self.config.get("progress", True) or self.rank != 0, dynamic_ncols=True)
        with SignalGuard() as guard:
            while self.step < stop_at:
                epoch, start_iter = divmod(self.step, self.iters_per_epoch)
                t_prev = time.perf_counter()
                for batch in self._loader(epoch, start_iter):
                    t0 = time.perf_counter()
                    values = self.train_step(batch)
                    self.step += 1
                    now = time.perf_counter()
                    # seconds: whole iteration (waiting for data included); step_seconds: compute
                    row = {"step": self.step - 1, "epoch": epoch, **values,
                           "seconds": now - t_prev, "step_seconds": now - t0}
                    t_prev = now
                    self.log_rows.append(row)
                    bar.update(1)
                    bar.set_postfix(loss=f"{values.get('loss', math.nan):.4f}")
                    end_of_epoch = self.step % self.iters_per_epoch == 0
                    save = []
                    if ckdir is not None:
                        if end_of_epoch and every_ep and (epoch + 1) % int(every_ep) == 0:
                            save.append(ckdir / f"epoch_{epoch + 1:04d}.pt")
                        if every_st and self.step % int(every_st) == 0:
                            save.append(ckdir / f"step_{self.step:07d}.pt")
                        if save or guard.signum is not None:
                            save.append(ckdir / "last.pt")
                    for p in save:
                        self.save_checkpoint(p)
                    if (save or end_of_epoch) and self.rank == 0 and self.out_dir is not None:
                        write_log(self.out_dir, self.log_rows)
                    if guard.signum is not None:
                        bar.close()
                        raise TrainingInterrupted(128 + guard.signum)
                    if self.step >= stop_at:
                        break
        bar.close()
        if self.step >= self.total_steps and self.out_dir is not None:
            self.save_checkpoint(self.out_dir / "final.pt")
            if self.rank == 0:
                self.export(self.out_dir)
        if self.rank == 0 and self.out_dir is not None:
            write_log(self.out_dir, self.log_rows)
        last = self.log_rows[-1] if self.log_rows else {}
        return {"step": self.step, "total_steps": self.total_steps, "last": last}

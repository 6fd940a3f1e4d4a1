"""Leopart fine-tuning (spec §3): student/teacher ViT, projection head + prototypes, Leopart loss.

Entry point: :func:`train_leopart` ``(config, dataset, out_dir)``; the dataset yields PIL images
(or image paths / uint8 arrays). Config keys and defaults are :data:`DEFAULT_CONFIG` (the
paper's values; the toy uses smaller crops and model).

One optimiser step, in the order of the authors' ``training_step`` (spec §3.7):
1. L2-normalise the prototype rows of student and teacher;
2. teacher forward on the global crops (no grad): embeddings, prototype scores, CLS attention;
3. fg masks (§3.4), Sinkhorn targets with the queue (§3.5);
4. student forward on all crops, RoI-aligned masked CE (§3.6);
5. teacher EMA ``θ_t ← m_i θ_t + (1 − m_i) θ_s`` over all parameters, ``θ_s`` the student before
   this step's update; so the forward pass of step 2 saw the teacher of the previous steps, with
   unit-length prototypes;
6. write lr/wd of step i into the 4 parameter groups, backward, AdamW step.

``ema_update: before_forward`` moves step 5 before step 2 (the teacher's forward then sees the
updated teacher, whose prototypes are a blend of unit rows rather than unit rows).

Deviations from the authors' code (options keep their behaviour reachable):
- the teacher forward runs under ``no_grad`` (identical values, less memory);
- the crop-overlap loop is bounded (``crops.max_tries``) and fewer fg tokens than the queue push
  size push what exists instead of crashing;
- teacher heads are initialised independently of the student's (authors) unless
  ``teacher_head_init="copy"``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leopart.models.vit import patch_size_of, tokens_and_attention, vit_tokens
from leopart.train.distributed import autocast
from leopart.train.heads import ProjectionHead, Prototypes
from leopart.train.leopart_loss import LeopartLoss
from leopart.train.model_ema import ema_update_
from leopart.train.multicrop import ColourAug, LeopartCrops, forward_by_resolution
from leopart.train.schedules import cosine_schedule, param_groups, set_schedule_values
from leopart.train.trainer import BaseTrainer

#: Defaults = the authors' configuration (spec §3.1). ``model`` is passed to ``build_vit``;
#: ``init`` to ``load_backbone_weights`` (source dino|leopart|local|random).
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 400,
    "model": {"arch": "vit_small_patch16_224", "patch_size": None, "embed_dim": None, "depth": None,
              "num_heads": None, "img_size": 224},
    "init": {"source": "random", "path": None, "trust": False},
    "drop_path_rate": 0.1,
    "crops": {
        "global_size": 224, "local_size": 96, "n_global": 2, "n_local": 4,
        "global_scale": [0.25, 1.0], "local_scale": [0.05, 0.25], "ratio": [3 / 4, 4 / 3],
        "min_intersection": 0.01, "max_tries": 100,
        "jitter": [0.8, 0.8, 0.8, 0.2], "jitter_p": 0.8, "gray_p": 0.2,
        "blur_sigma": [0.1, 2.0], "blur_p": 0.5,
    },
    "head": {"hidden_dim": 2048, "out_dim": 256, "n_layers": 3, "n_prototypes": 300},
    "teacher_head_init": "independent",
    "ema_update": "after_forward",
    "loss": {
        "loss_mask": "fg", "queue_length": 4096, "push_factor": 10, "eps": 0.05, "sinkhorn_iters": 3,
        "student_temp": 0.1, "roi_size": 7, "mask_tolerance": 0.0, "queue_scores_with": "student",
        "fg_threshold": 0.6, "fg_blur_sigma": 0.6, "fg_blur_kernel": 7, "fg_min_component": 3,
    },
    "optim": {
        "lr_backbone": 1e-5, "lr_head": 1e-4, "final_lr": 0.0,
        "weight_decay": 0.04, "weight_decay_end": 0.5,
        "momentum_teacher": 0.9995, "momentum_teacher_end": 1.0,
        "betas": [0.9, 0.999], "eps": 1e-8,
    },
    "batch_size": 32,
    "epochs": 50,
    "num_workers": 0,
    "device": "auto",
    "precision": "fp32",
    "checkpoint_every_epochs": 5,
    "checkpoint_every_steps": None,
    "progress": True,
}


class LeopartModel(nn.Module):
    """Backbone + projection head + prototypes (one student or one teacher)."""

    def __init__(self, backbone: nn.Module, head: ProjectionHead, prototypes: Prototypes) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.prototypes = prototypes

    @property
    def patch_size(self) -> int:
        return patch_size_of(self.backbone)[0]

    def forward(self, crops: Sequence[torch.Tensor], with_attention: bool = False) -> dict[str, list]:
        """Run crops grouped by resolution (:func:`~leopart.train.multicrop.forward_by_resolution`).

        Args:
            crops: list of (B, 3, S_v, S_v) tensors.
            with_attention: also return last-block CLS attention (explicit attention; teacher).
        Returns:
            dict with per-crop lists ``emb`` (B, h, w, D), ``scores`` (B, h, w, K) and ``attn``
            (B, heads, h·w) (empty unless ``with_attention``).
        """

        def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if with_attention:
                tokens, attn = tokens_and_attention(self.backbone, x)
            else:
                tokens, attn = vit_tokens(self.backbone, x)[1], None
            emb = self.head(tokens)
            return (emb, self.prototypes(emb)) if attn is None else (emb, self.prototypes(emb), attn)

        per_crop = forward_by_resolution(crops, run)
        return {"emb": [c[0] for c in per_crop], "scores": [c[1] for c in per_crop],
                "attn": [c[2] for c in per_crop] if with_attention else []}


def make_crops(cfg: Mapping[str, Any]) -> LeopartCrops:
    """:class:`LeopartCrops` from the ``crops`` config section."""
    colour = ColourAug(jitter=tuple(cfg["jitter"]), jitter_p=cfg["jitter_p"], gray_p=cfg["gray_p"],
                       blur_sigma=tuple(cfg["blur_sigma"]), blur_p=cfg["blur_p"])
    return LeopartCrops(
        global_size=cfg["global_size"], local_size=cfg["local_size"], n_global=cfg["n_global"],
        n_local=cfg["n_local"], global_scale=tuple(cfg["global_scale"]), local_scale=tuple(cfg["local_scale"]),
        ratio=tuple(cfg["ratio"]), min_intersection=cfg["min_intersection"], colour=colour,
        flip_p=0.0, max_tries=cfg["max_tries"],
    )


class LeopartTrainer(BaseTrainer):
    """Leopart fine-tuning loop (see the module docstring for the step order); set-up,
    checkpoints, logs and resumption are :class:`~leopart.train.trainer.BaseTrainer`'s.

    ``backbone`` (optional) is a pre-built ViT (e.g. with DINO weights) used instead of
    ``config.model``/``config.init``; the teacher backbone is a copy of it.
    """

    kind = "leopart"
    DEFAULT_CONFIG = DEFAULT_CONFIG
    CHOICES = {"teacher_head_init": ("independent", "copy"), "ema_update": ("after_forward", "before_forward")}
    student_key = "model"  # leopart.models.checkpoints (source "local") loads this one's backbone

    def make_crops(self, cfg: Mapping[str, Any]) -> LeopartCrops:
        return make_crops(cfg)

    def build_models(self, backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
        teacher_backbone = copy.deepcopy(backbone)
        dim = int(backbone.embed_dim)
        h = self.config["head"]

        def heads() -> tuple[ProjectionHead, Prototypes]:
            return (ProjectionHead(dim, h["hidden_dim"], h["out_dim"], h["n_layers"]),
                    Prototypes(h["out_dim"], h["n_prototypes"]))

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            s_head, s_proto = heads()
            t_head, t_proto = heads()  # independent init (authors)
        if self.config["teacher_head_init"] == "copy":
            t_head.load_state_dict(s_head.state_dict())
            t_proto.load_state_dict(s_proto.state_dict())
        return LeopartModel(backbone, s_head, s_proto), LeopartModel(teacher_backbone, t_head, t_proto)

    def build_optimisation(self) -> None:
        cfg, h = self.config, self.config["head"]
        lc = cfg["loss"]
        self.loss = LeopartLoss(
            n_prototypes=h["n_prototypes"], embed_dim=h["out_dim"], n_global=self.crops.n_global,
            queue_length=lc["queue_length"], push_factor=lc["push_factor"], eps=lc["eps"],
            sinkhorn_iters=lc["sinkhorn_iters"], student_temp=lc["student_temp"], roi_size=lc["roi_size"],
            loss_mask=lc["loss_mask"], mask_tolerance=lc["mask_tolerance"],
            queue_scores_with=lc["queue_scores_with"], fg_threshold=lc["fg_threshold"],
            fg_blur_sigma=lc["fg_blur_sigma"], fg_blur_kernel=lc["fg_blur_kernel"],
            fg_min_component=lc["fg_min_component"], world_size=self.world,
        ).to(self.device)

        o = cfg["optim"]
        groups = param_groups(self.student_module.backbone,
                              [self.student_module.head, self.student_module.prototypes],
                              o["lr_backbone"], o["lr_head"])
        self.optimizer = torch.optim.AdamW(groups, lr=o["lr_backbone"], betas=tuple(o["betas"]), eps=o["eps"])
        t = self.total_steps
        self.lr_backbone = cosine_schedule(o["lr_backbone"], o["final_lr"], t)
        self.lr_head = cosine_schedule(o["lr_head"], o["final_lr"], t)
        self.wd = cosine_schedule(o["weight_decay"], o["weight_decay_end"], t)
        self.momentum = cosine_schedule(o["momentum_teacher"], o["momentum_teacher_end"], t)

    # ------------------------------------------------------------------ one step

    def forward_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Teacher + targets + student + loss for a collated batch (no optimiser update)."""
        dev = self.device
        crops = [c.to(dev, non_blocking=True) for c in batch["crops"]]
        g = self.crops.n_global
        b = crops[0].shape[0]
        with autocast(dev, self.precision):
            with torch.no_grad():
                t = self.teacher(crops[:g], with_attention=self.loss.loss_mask != "all")
            s = self.student(crops)
        t_scores = torch.stack(t["scores"]).float()  # (G, B, h, w, K)
        t_emb = torch.stack(t["emb"]).float()
        grid = tuple(t_scores.shape[2:4])
        attn = torch.cat(t["attn"]).float() if t["attn"] else None
        mask = self.loss.loss_masks(attn, grid, b)
        queue_in_use = float(self.loss.queue_in_use(0))
        protos = (self.student_module if self.loss.queue_scores_with == "student" else self.teacher).prototypes
        targets = self.loss.targets(t_scores, t_emb, mask, protos.weight, self.generator)
        student_scores = [x.permute(0, 3, 1, 2) for x in s["scores"]]  # (B, K, r, r)
        loss, stats = self.loss(student_scores, targets, mask, batch["gc"].to(dev), batch["all"].to(dev),
                                self.student_module.patch_size)
        if mask is not None:
            stats["fg_fraction"] = float(mask.mean()) if self.loss.loss_mask == "fg" else float(1 - mask.mean())
        stats["queue_in_use"] = queue_in_use
        return loss, stats

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        i = self.schedule_index()
        self.student_module.train()
        self.teacher.train()
        with torch.no_grad():
            self.student_module.prototypes.normalize_()
            self.teacher.prototypes.normalize_()
        m = float(self.momentum[i])
        ema_first = self.config["ema_update"] == "before_forward"
        if ema_first:
            ema_update_(self.teacher, self.student_module, m)
        loss, stats = self.forward_loss(batch)
        if not ema_first:
            ema_update_(self.teacher, self.student_module, m)
        value = self.loss_value(loss, "lower optim.lr_*?")
        lr_b, lr_h, wd = float(self.lr_backbone[i]), float(self.lr_head[i]), float(self.wd[i])
        set_schedule_values(self.optimizer, lr_b, lr_h, wd)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": value, "lr": lr_b, "lr_head": lr_h, "wd": wd, "momentum": m, **{
            k: float(v) for k, v in stats.items()}}


def train_leopart(config: Mapping[str, Any] | None, dataset: Any, out_dir: str | Path,
                  backbone: nn.Module | None = None, resume: str | Path | None = None,
                  max_steps: int | None = None) -> dict[str, Any]:
    """Train Leopart; returns a summary dict. Resumes from ``resume`` (or from
    ``out_dir/checkpoints/last.pt`` when ``resume="auto"`` and it exists).

    Writes under ``out_dir``: ``checkpoints/`` (epoch_XXXX.pt, last.pt), ``final.pt``,
    ``backbone_student.pt``, ``backbone_teacher.pt``, ``train_log.{csv,parquet}``,
    ``loss_curve.png``, ``train_summary.json``.
    """
    return LeopartTrainer(config, dataset, out_dir, backbone=backbone).run(resume, max_steps)


__all__ = ["DEFAULT_CONFIG", "LeopartModel", "LeopartTrainer", "make_crops", "train_leopart"]

"""Compact DINO self-distillation pretraining (after facebookresearch/dino, ``main_dino.py``).

**What it is for:** users with a new image domain (medical, satellite, microscopy, …) for which no
DINO checkpoint exists can pretrain a ViT backbone here and then fine-tune it with Leopart
(:mod:`leopart.train.leopart_trainer`, ``init: {source: dino, path: <out_dir>/final.pt}``). It is
not part of the paper's protocol (Table 5 starts from the released DINO ViT-S/16) and is
independent of the Leopart spec. Also used to pretrain the toy backbone: the committed default
``models/toy/dino_vit_toy.pth`` is 2,250 steps of this trainer on 2 CPU cores (34 min) with
``training.dino`` of ``config/config.yaml``; its CLS attention finds the toy objects (the check
it is shipped on, :mod:`leopart.eval.validate`), its K=30 overclustering does not beat a
random-init ViT (reported in its provenance JSON).

Recipe (DINO defaults for ViT-S/16; the toy overrides are :data:`TOY_CONFIG`):
- multi-crop: 2 global crops (scale 0.4–1) + ``n_local`` local crops (0.05–0.4), aspect 3/4–4/3,
  horizontal flip p=0.5, colour jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2, Gaussian blur
  σ∈[0.1, 2] with p = 1.0 / 0.1 / 0.5 (global 1 / global 2 / local), solarisation p=0.2 on
  global 2;
- student and teacher: ViT + DINO head on the CLS token (MLP → bottleneck → L2 → weight-
  normalised last layer with g ≡ 1); the teacher starts as a copy of the student and follows it
  by EMA after every optimiser step (momentum cosine 0.996 → 1); the teacher sees global crops
  only;
- loss: CE between the teacher's centred, sharpened softmax (temperature linear warm-up
  0.04 → 0.07 over ``warmup_teacher_temp_epochs``, then constant) and the student's softmax
  (temperature 0.1) for every (teacher global crop, other student crop) pair; centre EMA 0.9 of
  the teacher outputs (all-reduced in DDP);
- AdamW, lr ``lr·global_batch/256`` with linear warm-up then cosine to ``min_lr``; weight decay
  cosine 0.04 → 0.4 (not on biases / 1-D tensors); per-parameter gradient-norm clipping at 3;
  the last head layer is frozen during the first ``freeze_last_layer`` epochs.

Checkpoints have DINO's layout (``student`` / ``teacher`` dicts with ``backbone.*`` and
``head.*`` keys), so ``load_backbone_weights(model, path, source="dino")`` reads the teacher
backbone from ``final.pt`` or any ``checkpoints/*.pt``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from leopart.models.vit import vit_tokens
from leopart.train.distributed import autocast, dist_info
from leopart.train.heads import DINOHead
from leopart.train.model_ema import ema_update_
from leopart.train.multicrop import ColourAug, LeopartCrops, forward_by_resolution
from leopart.train.schedules import cosine_schedule, param_groups, set_schedule_values
from leopart.train.trainer import BaseTrainer

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "model": {"arch": "vit_small_patch16_224", "patch_size": None, "embed_dim": None, "depth": None,
              "num_heads": None, "img_size": 224},
    "init": {"source": "random", "path": None, "trust": False},
    "drop_path_rate": 0.1,
    "crops": {
        "global_size": 224, "local_size": 96, "n_local": 8,
        "global_scale": [0.4, 1.0], "local_scale": [0.05, 0.4], "ratio": [3 / 4, 4 / 3],
        "flip_p": 0.5, "jitter": [0.4, 0.4, 0.2, 0.1], "jitter_p": 0.8, "gray_p": 0.2,
        "blur_sigma": [0.1, 2.0], "blur_p": [1.0, 0.1, 0.5], "solarize_p": 0.2,
    },
    "head": {"out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "n_layers": 3},
    "loss": {"warmup_teacher_temp": 0.04, "teacher_temp": 0.07, "warmup_teacher_temp_epochs": 30,
             "student_temp": 0.1, "center_momentum": 0.9},
    "optim": {
        "lr": 5e-4, "scale_lr_with_batch": True, "min_lr": 1e-6, "warmup_epochs": 10,
        "weight_decay": 0.04, "weight_decay_end": 0.4, "momentum_teacher": 0.996,
        "momentum_teacher_end": 1.0, "clip_grad": 3.0, "freeze_last_layer": 1,
        "betas": [0.9, 0.999], "eps": 1e-8,
    },
    "batch_size": 64,
    "epochs": 100,
    "num_workers": 0,
    "device": "auto",
    "precision": "fp32",
    "checkpoint_every_epochs": 10,
    "checkpoint_every_steps": None,
    "progress": True,
}

#: Overrides for the toy backbone (patch 8, dim 96, depth 4, 64 px; see the feasibility note).
TOY_CONFIG: dict[str, Any] = {
    "model": {"arch": "custom", "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3, "img_size": 64},
    "drop_path_rate": 0.0,
    "crops": {"global_size": 64, "local_size": 32, "n_local": 4, "local_scale": [0.1, 0.4]},
    "head": {"out_dim": 1024, "hidden_dim": 1024},
    "optim": {"warmup_epochs": 1},
    "loss": {"warmup_teacher_temp_epochs": 5},
}


class DINOModel(nn.Module):
    """``MultiCropWrapper``: backbone CLS token of every crop (same-size crops batched) → head."""

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """n tensors (B, 3, S, S) -> (n·B, out_dim) logits, crop-major."""
        cls = forward_by_resolution(crops, lambda x: vit_tokens(self.backbone, x)[0])
        return self.head(torch.cat(cls))


class DINOLoss(nn.Module):
    """DINO's cross-entropy with teacher centring and sharpening (``DINOLoss`` in main_dino.py)."""

    def __init__(self, out_dim: int, n_crops: int, teacher_temps: np.ndarray, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.n_crops = n_crops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.teacher_temps = teacher_temps
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_stats: dict[str, float] = {}

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, epoch: int) -> torch.Tensor:
        """student_out (n_crops·B, K), teacher_out (2·B, K) -> scalar; updates the centre.

        Also sets ``last_stats``: ``teacher_entropy`` (mean entropy of the centred, sharpened
        teacher distribution; stuck at ln K means collapse to uniform, near 0 collapse to one
        dimension) and ``kl`` (loss minus that entropy: how far the student is from the targets).
        """
        s = (student_out.float() / self.student_temp).chunk(self.n_crops)
        temp = float(self.teacher_temps[min(epoch, len(self.teacher_temps) - 1)])
        t = F.softmax((teacher_out.float() - self.center) / temp, dim=-1).detach().chunk(2)
        total = student_out.new_zeros((), dtype=torch.float32)
        n_terms = 0
        for iq, q in enumerate(t):
            for v in range(len(s)):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n_terms += 1
        self.update_center(teacher_out)
        loss = total / n_terms
        with torch.no_grad():
            ent = float(torch.stack([-(q * torch.log(q.clamp_min(1e-30))).sum(-1).mean() for q in t]).mean())
        self.last_stats = {"teacher_entropy": ent, "kl": float(loss.detach()) - ent}
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = torch.sum(teacher_out.float(), dim=0, keepdim=True)
        world, _ = dist_info()
        if world > 1:
            dist.all_reduce(batch_center)
        batch_center = batch_center / (len(teacher_out) * world)
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


def make_dino_crops(cfg: Mapping[str, Any]) -> LeopartCrops:
    """DINO's ``DataAugmentationDINO`` as a :class:`LeopartCrops` (no overlap rule, flips on)."""
    bp = cfg["blur_p"]
    bp = [bp] * 3 if isinstance(bp, (int, float)) else list(bp)

    def aug(blur_p: float, solarize_p: float = 0.0) -> ColourAug:
        return ColourAug(jitter=tuple(cfg["jitter"]), jitter_p=cfg["jitter_p"], gray_p=cfg["gray_p"],
                         blur_sigma=tuple(cfg["blur_sigma"]), blur_p=blur_p, solarize_p=solarize_p)

    colour = [aug(bp[0]), aug(bp[1], cfg["solarize_p"])] + [aug(bp[2])] * int(cfg["n_local"])
    return LeopartCrops(
        global_size=cfg["global_size"], local_size=cfg["local_size"], n_global=2, n_local=cfg["n_local"],
        global_scale=tuple(cfg["global_scale"]), local_scale=tuple(cfg["local_scale"]), ratio=tuple(cfg["ratio"]),
        min_intersection=None, colour=colour, flip_p=cfg["flip_p"],
    )


def clip_gradients_(model: nn.Module, clip: float) -> None:
    """DINO's per-parameter gradient-norm clipping (each tensor's grad norm ≤ ``clip``)."""
    for p in model.parameters():
        if p.grad is not None:
            coef = clip / (p.grad.detach().norm(2) + 1e-6)
            p.grad.mul_(torch.clamp(coef, max=1.0))  # no host sync; x·1.0 leaves x unchanged


class DINOTrainer(BaseTrainer):
    """DINO pretraining loop (see the module docstring); set-up, checkpoints, logs and resumption
    are :class:`~leopart.train.trainer.BaseTrainer`'s."""

    kind = "dino"
    DEFAULT_CONFIG = DEFAULT_CONFIG

    def make_crops(self, cfg: Mapping[str, Any]) -> LeopartCrops:
        return make_dino_crops(cfg)

    def build_models(self, backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
        h = self.config["head"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            head = DINOHead(int(backbone.embed_dim), h["out_dim"], h["hidden_dim"], h["bottleneck_dim"], h["n_layers"])
        student = DINOModel(backbone, head)
        return student, copy.deepcopy(student)  # teacher = student at start (DINO)

    def build_optimisation(self) -> None:
        o, lc, h = self.config["optim"], self.config["loss"], self.config["head"]
        lr = o["lr"] * (self.world * self.batch_size / 256.0 if o["scale_lr_with_batch"] else 1.0)
        groups = param_groups(self.student_module.backbone, [self.student_module.head], lr, lr)
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(o["betas"]), eps=o["eps"])
        t, it = self.total_steps, self.iters_per_epoch
        warm = min(int(o["warmup_epochs"]) * it, t)
        self.lr = cosine_schedule(lr, o["min_lr"], t, warmup_steps=warm, warmup_start=0.0)
        self.wd = cosine_schedule(o["weight_decay"], o["weight_decay_end"], t)
        self.momentum = cosine_schedule(o["momentum_teacher"], o["momentum_teacher_end"], t)
        we = min(int(lc["warmup_teacher_temp_epochs"]), self.epochs)
        temps = np.concatenate([np.linspace(lc["warmup_teacher_temp"], lc["teacher_temp"], we),
                                np.full(self.epochs - we, lc["teacher_temp"])])
        self.loss = DINOLoss(h["out_dim"], self.crops.n_crops, temps, lc["student_temp"],
                             lc["center_momentum"]).to(self.device)

    def forward_loss(self, batch: Mapping[str, Any], epoch: int) -> torch.Tensor:
        crops = [c.to(self.device, non_blocking=True) for c in batch["crops"]]
        with autocast(self.device, self.precision):
            with torch.no_grad():
                t = self.teacher(crops[:2])
            s = self.student(crops)
        return self.loss(s, t, epoch)

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        i = self.schedule_index()
        epoch = i // self.iters_per_epoch
        o = self.config["optim"]
        lr, wd = float(self.lr[i]), float(self.wd[i])
        set_schedule_values(self.optimizer, lr, lr, wd)
        self.student_module.train()
        loss = self.forward_loss(batch, epoch)
        value = self.loss_value(loss, "lower optim.lr?")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o["clip_grad"]:
            clip_gradients_(self.student_module, float(o["clip_grad"]))
        if epoch < int(o["freeze_last_layer"]):
            self.student_module.head.last_layer_v.grad = None
        self.optimizer.step()
        m = float(self.momentum[i])
        ema_update_(self.teacher, self.student_module, m)  # DINO: after the optimiser step
        temp = float(self.loss.teacher_temps[min(epoch, len(self.loss.teacher_temps) - 1)])
        return {"loss": value, "lr": lr, "wd": wd, "momentum": m, "teacher_temp": temp, **self.loss.last_stats}


def train_dino(config: Mapping[str, Any] | None, dataset: Any, out_dir: str | Path,
               backbone: nn.Module | None = None, resume: str | Path | None = None,
               max_steps: int | None = None) -> dict[str, Any]:
    """Pretrain a ViT with DINO on ``dataset`` (PIL images / paths / uint8 arrays).

    ``resume="auto"`` continues from ``out_dir/checkpoints/last.pt`` if it exists. Writes
    ``checkpoints/``, ``final.pt`` (DINO layout), ``backbone_{teacher,student}.pt``,
    ``train_log.{csv,parquet}``, ``loss_curve.png``, ``train_summary.json``.
    """
    return DINOTrainer(config, dataset, out_dir, backbone=backbone).run(resume, max_steps)


__all__ = ["DEFAULT_CONFIG", "TOY_CONFIG", "DINOHead", "DINOLoss", "DINOModel", "DINOTrainer", "train_dino"]

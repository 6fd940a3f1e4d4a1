"""The Leopart loss: Sinkhorn targets with a queue, RoI-aligned crop pairs, masked CE (spec §3.4–3.6).

Shapes (per process): ``B`` images, ``G`` global (target) crops, ``n`` crops in total, ``K``
prototypes, ``D`` projection dim, ``h×w`` teacher token grid of a global crop, ``r_v`` token grid
of crop ``v``.

Authors' behaviour reproduced by default (each is an option):
- queue scores are computed with the STUDENT's prototypes (``queue_scores_with="student"``),
  although the current tokens are scored with the teacher's (spec §3.5);
- a 7×7 cell is foreground only if its RoI-aligned hard mask is ``>= 1.0`` exactly
  (``mask_tolerance=0``; spec §3.6 [AMBIG]);
- the push to the queue takes ``min(push_factor·B, queue_length)`` random (fg) tokens. Unlike the
  authors' code (which crashes), fewer available tokens are handled by pushing all that exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from leopart.errors import LeopartError
from leopart.train.sinkhorn import AllReduce, sinkhorn

LOSS_MASKS = ("fg", "bg", "all")


def roi_align_boxes(x: torch.Tensor, boxes: torch.Tensor, output_size: int = 7) -> torch.Tensor:
    """RoI-align ``x`` (B, C, H, W) with ``boxes`` (B, V, 4) in token units -> (B·V, C, s, s).

    ``spatial_scale=1``, adaptive sampling (``sampling_ratio=-1``), ``aligned=True``; output rows
    are image-major (image b, box v at index ``b·V + v``), as in the authors' code.
    """
    b, v = boxes.shape[:2]
    idx = torch.arange(b, device=x.device, dtype=x.dtype).repeat_interleave(v)
    rois = torch.cat([idx[:, None], boxes.reshape(b * v, 4).to(device=x.device, dtype=x.dtype)], dim=1)
    return roi_align(x, rois, output_size=output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class LeopartLoss(nn.Module):
    """Leopart dense clustering loss with per-target-crop FIFO queues.

    Args:
        n_prototypes: K (300).
        embed_dim: projection dim D (256) of the queued teacher embeddings.
        n_global: number of target crops G (``crops_for_assign = [0, 1]``).
        queue_length: per-process queue length per target crop (4096; 0 disables the queue).
        push_factor: tokens pushed per step = ``min(push_factor·B, queue_length)`` (10).
        eps / sinkhorn_iters: Sinkhorn ε (0.05) and iterations (3).
        student_temp: τ (0.1).
        roi_size: RoI-align output side (7).
        loss_mask: ``"fg"`` (teacher-attention foreground), ``"bg"`` (its complement) or ``"all"``.
        mask_tolerance: a cell is masked in iff its aligned mask ``>= 1 − mask_tolerance``.
        queue_scores_with: ``"student"`` (authors) or ``"teacher"`` prototypes for queue scores.
        fg_threshold / fg_blur_sigma / fg_blur_kernel / fg_min_component: spec §3.4 mask settings.
        world_size / all_reduce: distributed Sinkhorn (see :func:`leopart.train.sinkhorn.sinkhorn`).
    """

    def __init__(
        self,
        n_prototypes: int = 300,
        embed_dim: int = 256,
        n_global: int = 2,
        queue_length: int = 4096,
        push_factor: int = 10,
        eps: float = 0.05,
        sinkhorn_iters: int = 3,
        student_temp: float = 0.1,
        roi_size: int = 7,
        loss_mask: str = "fg",
        mask_tolerance: float = 0.0,
        queue_scores_with: str = "student",
        fg_threshold: float = 0.6,
        fg_blur_sigma: float = 0.6,
        fg_blur_kernel: int = 7,
        fg_min_component: int = 3,
        world_size: int = 1,
        all_reduce: AllReduce | None = None,
    ) -> None:
        super().__init__()
        if loss_mask not in LOSS_MASKS:
            raise LeopartError(f"loss.loss_mask: must be one of {LOSS_MASKS}, got {loss_mask!r}")
        if queue_scores_with not in ("student", "teacher"):
            raise LeopartError(f"loss.queue_scores_with: must be 'student' or 'teacher', got {queue_scores_with!r}")
        if queue_length < 0:
            raise LeopartError(f"loss.queue_length: must be >= 0, got {queue_length}")
        if student_temp <= 0:
            raise LeopartError(f"loss.student_temp: must be > 0, got {student_temp}")
        if not 0 <= mask_tolerance < 1:
            raise LeopartError(f"loss.mask_tolerance: must be in [0, 1), got {mask_tolerance}")
        self.n_prototypes = n_prototypes
        self.embed_dim = embed_dim
        self.n_global = n_global
        self.queue_length = queue_length
        self.push_factor = push_factor
        self.eps = eps
        self.sinkhorn_iters = sinkhorn_iters
        self.student_temp = student_temp
        self.roi_size = roi_size
        self.loss_mask = loss_mask
        self.mask_tolerance = mask_tolerance
        self.queue_scores_with = queue_scores_with
        self.fg_threshold = fg_threshold
        self.fg_blur_sigma = fg_blur_sigma
        self.fg_blur_kernel = fg_blur_kernel
        self.fg_min_component = fg_min_component
        self.world_size = world_size
        self.all_reduce = all_reduce
        self.register_buffer("queue", torch.zeros(n_global, queue_length, embed_dim))

    # ------------------------------------------------------------------ masks

    @torch.no_grad()
    def attention_fg(self, cls_attn: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Foreground from last-block CLS attention (spec §3.4).

        Args:
            cls_attn: (N, heads, h·w) CLS→patch attention (N = G·B, crop-major).
            grid: (h, w).
        Returns:
            (N, h, w) float32 0/1 on ``cls_attn``'s device.
        """
        from leopart.features.attention import attention_masks

        m = attention_masks(
            cls_attn.detach().float().cpu().numpy(), grid, threshold=self.fg_threshold,
            blur_sigma=self.fg_blur_sigma, blur_kernel=self.fg_blur_kernel, min_component=self.fg_min_component,
        )
        return torch.as_tensor(m, dtype=torch.float32, device=cls_attn.device).reshape(-1, *grid)

    @torch.no_grad()
    def loss_masks(self, cls_attn: torch.Tensor | None, grid: tuple[int, int], batch: int) -> torch.Tensor | None:
        """(G, B, h, w) float 0/1 mask for ``loss_mask`` (None for ``"all"``)."""
        if self.loss_mask == "all":
            return None
        if cls_attn is None:
            raise LeopartError(f"loss.loss_mask={self.loss_mask!r} needs the teacher's CLS attention")
        fg = self.attention_fg(cls_attn, grid).reshape(self.n_global, batch, *grid)
        return fg if self.loss_mask == "fg" else 1.0 - fg

    # ------------------------------------------------------------------ targets

    def queue_in_use(self, a: int) -> bool:
        """Queue ``a`` is used once full (its last row is non-zero)."""
        return self.queue_length > 0 and bool(self.queue[a, -1].abs().sum() > 0)

    @torch.no_grad()
    def targets(
        self,
        teacher_scores: torch.Tensor,
        teacher_emb: torch.Tensor,
        mask: torch.Tensor | None,
        queue_prototypes: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sinkhorn targets for every target crop, updating the queues (spec §3.5).

        Args:
            teacher_scores: (G, B, h, w, K) teacher prototype scores.
            teacher_emb: (G, B, h, w, D) L2-normalised teacher embeddings (queued).
            mask: (G, B, h, w) 0/1 tokens eligible for the queue, or None (all tokens).
            queue_prototypes: (K, D) prototypes scoring the queue (student's by default).
            generator: CPU generator for the random choice of pushed tokens.
        Returns:
            (G, B, K, h, w) float32 soft assignments (sum 1 over K).
        """
        g, b, h, w, k = teacher_scores.shape
        out = []
        protos = queue_prototypes.detach().float()
        for a in range(g):
            s = teacher_scores[a].reshape(b * h * w, k).float()
            n_cur = s.shape[0]
            if self.queue_length > 0:
                if self.queue_in_use(a):
                    s = torch.cat([self.queue[a].float() @ protos.t(), s], dim=0)
                self._push(a, teacher_emb[a].reshape(b * h * w, -1),
                           None if mask is None else mask[a].reshape(-1) > 0, b, generator)
            q = sinkhorn(s, eps=self.eps, iters=self.sinkhorn_iters, world_size=self.world_size,
                         all_reduce=self.all_reduce)[-n_cur:]
            out.append(q.reshape(b, h, w, k).permute(0, 3, 1, 2))
        return torch.stack(out)

    @torch.no_grad()
    def _push(self, a: int, emb: torch.Tensor, eligible: torch.Tensor | None, batch: int,
              generator: torch.Generator | None) -> None:
        cand = torch.arange(emb.shape[0]) if eligible is None else torch.nonzero(eligible.cpu()).reshape(-1)
        n_push = min(self.push_factor * batch, self.queue_length, int(cand.numel()))
        if n_push == 0:
            return
        pick = cand[torch.randperm(cand.numel(), generator=generator)[:n_push]].to(emb.device)
        q = self.queue[a]
        q[n_push:] = q[:-n_push].clone()
        q[:n_push] = emb[pick].to(q.dtype)

    # ------------------------------------------------------------------ loss

    def forward(
        self,
        student_scores: Sequence[torch.Tensor],
        targets: torch.Tensor,
        mask: torch.Tensor | None,
        gc_boxes: torch.Tensor,
        all_boxes: torch.Tensor,
        patch_size: int,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Masked cross-entropy over all (target a, predicting crop v ≠ a) pairs (spec §3.6).

        Args:
            student_scores: n tensors (B, K, r_v, r_v) of student prototype logits per crop.
            targets: (G, B, K, h, w) from :meth:`targets`.
            mask: (G, B, h, w) 0/1 loss mask of each target crop, or None (``"all"``).
            gc_boxes: (B, G, n, 4) boxes of I(a, v) in crop a's frame (pixels).
            all_boxes: (B, n, G, 4) boxes of I(a, v) in crop v's frame (pixels).
            patch_size: pixels per token (boxes are divided by it).
        Returns:
            ``(loss, stats)``; ``loss = (1/G) Σ_a (1/(n−1)) Σ_{v≠a} CE(a, v)``, a pair with an
            empty mask contributes 0.
        """
        n = len(student_scores)
        g, b = targets.shape[:2]
        if gc_boxes.shape[:3] != (b, g, n) or all_boxes.shape[:3] != (b, n, g):
            raise LeopartError(
                f"loss: boxes {tuple(gc_boxes.shape)}/{tuple(all_boxes.shape)} do not match B={b}, G={g}, n={n}"
            )
        ps = float(patch_size)
        # keeps the graph connected (DDP) even if every pair is skipped
        total = sum(s.sum() for s in student_scores) * 0.0
        skipped = 0
        cells_fg = 0.0
        thr = 1.0 - self.mask_tolerance
        for a in range(g):
            tgt = roi_align_boxes(targets[a].float(), gc_boxes[:, a] / ps, self.roi_size)
            tgt = tgt.reshape(b, n, *tgt.shape[1:])
            if mask is not None:
                mk = roi_align_boxes(mask[a][:, None].float(), gc_boxes[:, a] / ps, self.roi_size)
                mk = (mk.reshape(b, n, self.roi_size, self.roi_size) >= thr).float()
            pair_sum = total.new_zeros(())
            for v in range(n):
                if v == a:
                    continue
                pred = roi_align_boxes(student_scores[v].float(), all_boxes[:, v, a][:, None] / ps, self.roi_size)
                logp = F.log_softmax(pred / self.student_temp, dim=1)
                ce_map = -(tgt[:, v] * logp).sum(dim=1)  # (B, s, s)
                if mask is None:
                    pair_sum = pair_sum + ce_map.mean()
                else:
                    m = mk[:, v]
                    msum = m.sum()
                    cells_fg += float(msum)
                    if float(msum) == 0.0:
                        skipped += 1
                        continue
                    pair_sum = pair_sum + (ce_map * m).sum() / msum
            total = total + pair_sum / (n - 1)
        loss = total / g
        stats = {"skipped_pairs": skipped, "fg_cells": cells_fg}
        return loss, stats


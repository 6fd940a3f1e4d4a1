"""The teacher's exponential moving average of the student (spec §3.7; DINO's teacher update).

Both trainers call :func:`ema_update_` once per step with the momentum of their cosine schedule
(:func:`leopart.train.schedules.cosine_schedule`); *when* in the step is the trainer's choice
(Leopart: ``ema_update``; DINO: after the optimiser step).
"""

from __future__ import annotations

import torch
from torch import nn

from leopart.errors import LeopartError


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place ``θ_t ← m·θ_t + (1−m)·θ_s`` over ALL parameters (backbone, heads, prototypes).

    Parameters are paired in registration order; both modules must have the same structure.
    A DistributedDataParallel ``student`` is unwrapped.
    """
    student = getattr(student, "module", student)
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise LeopartError(
            f"ema: teacher has {len(t_params)} parameter tensors, student {len(s_params)}; "
            "the two models must have the same structure"
        )
    for pt, ps in zip(t_params, s_params):
        if pt.shape != ps.shape:
            raise LeopartError(f"ema: parameter shape mismatch {tuple(pt.shape)} vs {tuple(ps.shape)}")
    if not t_params:
        return
    m = float(momentum)
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, [p.detach().to(pt.dtype) for p, pt in zip(s_params, t_params)], alpha=1.0 - m)

"""Per-step schedules and optimiser parameter groups (spec §3.1, §3.7).

All schedules are plain numpy arrays with exactly one entry per optimiser step (the authors'
code indexes them with the global step).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from leopart.errors import LeopartError


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """DINO-style per-step cosine schedule, float64 array of length ``total_steps``.

    The first ``warmup_steps`` entries rise linearly from ``warmup_start`` to ``base``
    (``np.linspace``, both ends included); the remaining ``T = total_steps - warmup_steps``
    entries are ``final + 0.5·(base − final)·(1 + cos(π·i/T))`` for ``i = 0..T−1``. Hence entry 0
    (after warm-up) is exactly ``base`` and the last entry approaches but does not reach
    ``final``. With ``base=0.9995, final=1`` this is the teacher momentum of spec §3.7,
    ``m_i = 1 + 0.5·(0.9995−1)·(1+cos(π i/T))``.
    """
    if total_steps < 0 or warmup_steps < 0:
        raise LeopartError(f"schedule: total_steps ({total_steps}) and warmup_steps ({warmup_steps}) must be >= 0")
    if warmup_steps > total_steps:
        raise LeopartError(f"schedule: warmup_steps ({warmup_steps}) exceeds total_steps ({total_steps})")
    warmup = np.linspace(warmup_start, base, warmup_steps) if warmup_steps > 0 else np.zeros(0)
    t = total_steps - warmup_steps
    i = np.arange(t, dtype=np.float64)
    body = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * i / max(t, 1)))
    return np.concatenate([warmup, body]).astype(np.float64)


def _no_decay(name: str, param: torch.Tensor) -> bool:
    """Spec §3.7: no weight decay for names ending in ``.bias`` and for 1-D tensors."""
    return name.endswith(".bias") or name == "bias" or param.ndim <= 1


def param_groups(
    model: nn.Module,
    head_modules: Sequence[nn.Module] | nn.Module,
    lr_backbone: float,
    lr_head: float,
) -> list[dict]:
    """Optimiser groups in the authors' order (spec §3.7).

    Returns four groups: ``backbone-decay``, ``backbone-no-decay``, ``head-decay``,
    ``head-no-decay``. ``model`` is the backbone (parameters that also belong to one of
    ``head_modules`` are assigned to the head groups instead); only parameters with
    ``requires_grad`` are included. No-decay groups have ``weight_decay = 0`` and
    ``apply_wd = False``; the weight-decay schedule is written into groups with
    ``apply_wd = True`` (indices 0 and 2). ``cls_token`` and ``pos_embed`` (3-D) are decayed.
    Empty groups are kept (with an empty ``params`` list removed by the caller if needed) so
    that group indices are stable; torch optimisers accept empty groups.
    """
    if isinstance(head_modules, nn.Module):
        head_modules = [head_modules]
    head_ids: set[int] = set()
    head_named: list[tuple[str, torch.Tensor]] = []
    for hi, hm in enumerate(head_modules):
        for n, p in hm.named_parameters():
            if id(p) in head_ids:
                continue
            head_ids.add(id(p))
            head_named.append((f"head{hi}.{n}", p))
    groups = {
        "backbone-decay": [], "backbone-no-decay": [], "head-decay": [], "head-no-decay": [],
    }
    seen: set[int] = set()
    for n, p in model.named_parameters():
        if not p.requires_grad or id(p) in head_ids or id(p) in seen:
            continue
        seen.add(id(p))
        groups["backbone-no-decay" if _no_decay(n, p) else "backbone-decay"].append(p)
    for n, p in head_named:
        if not p.requires_grad:
            continue
        groups["head-no-decay" if _no_decay(n, p) else "head-decay"].append(p)
    out = []
    for name, params in groups.items():
        decay = not name.endswith("no-decay")
        out.append({
            "name": name,
            "params": params,
            "lr": lr_backbone if name.startswith("backbone") else lr_head,
            "weight_decay": 0.0,
            "apply_wd": decay,
        })
    return out


def set_schedule_values(
    optimizer: torch.optim.Optimizer,
    lr_backbone: float,
    lr_head: float,
    weight_decay: float,
) -> None:
    """Write this step's values into groups built by :func:`param_groups`."""
    for g in optimizer.param_groups:
        g["lr"] = lr_backbone if g.get("name", "").startswith("backbone") else lr_head
        g["weight_decay"] = weight_decay if g.get("apply_wd", True) else 0.0


def check_schedule_length(schedules: Iterable[np.ndarray], total_steps: int) -> None:
    """Every schedule must have exactly ``total_steps`` entries (spec §3.7)."""
    for s in schedules:
        if len(s) != total_steps:
            raise LeopartError(f"schedule: length {len(s)} != total steps {total_steps}")

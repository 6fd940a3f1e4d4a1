"""Processes and devices: DDP rank/world, device choice, autocast, the student's DDP wrapper,
cross-process means and the per-rank data order."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from leopart.errors import LeopartError


def dist_info() -> tuple[int, int]:
    """(world_size, rank); (1, 0) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → cuda if available else cpu; in DDP, cuda means ``cuda:<local rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LeopartError(f"device: {name!r} requested but CUDA is not available")
        if name == "cuda" and dist_info()[0] > 1:
            return torch.device("cuda", torch.cuda.current_device())
    elif name != "cpu":
        raise LeopartError(f"device: expected cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast on CUDA for ``precision="bf16"``; a no-op otherwise (fp32)."""
    if precision not in ("fp32", "bf16"):
        raise LeopartError(f"precision: expected fp32 or bf16, got {precision!r}")
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when several processes run; ``module`` itself otherwise."""
    if dist_info()[0] == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def all_reduce_mean(x: float, device: torch.device) -> float:
    """Mean of a Python float over processes (identity without DDP)."""
    world, _ = dist_info()
    if world == 1:
        return float(x)
    t = torch.tensor([float(x)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world


def epoch_batches(n: int, batch_size: int, world: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's index lists for one epoch (drop_last over global batches of world·batch).

    Global batches come from a seeded permutation and rank ``r`` takes slice ``r`` of each, so
    DDP on ``W`` processes sees exactly the images one process would see with a ``W``-times
    larger batch.
    """
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 7]).generate_state(1)[0]))
    perm = torch.randperm(n, generator=g).tolist()
    gb = world * batch_size
    out = []
    for i in range(n // gb):
        chunk = perm[i * gb:(i + 1) * gb]
        out.append(chunk[rank * batch_size:(rank + 1) * batch_size])
    return out

"""Sinkhorn-Knopp balanced assignment of tokens to prototypes (spec §3.5, SwAV variant).

The authors compute ``Q = exp(S/ε)^T`` (K × M), divide by its total, then alternate 3× between
scaling rows to ``1/K`` and columns to ``1/M`` (``1/(world·M)`` in DDP, where the total and the
row sums are all-reduced), finally normalise each column to sum 1 and transpose back to (M, K).

Here the same iteration runs in the log domain: every scaling becomes a subtraction of a
log-sum-exp, so large scores (or small ε) can neither overflow nor underflow. In exact
arithmetic the result is identical to the authors' version; in float32 it agrees to round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist

from leopart.errors import LeopartError

# all_reduce(tensor, op) reduces ``tensor`` in place across processes; op is "sum" or "max".
AllReduce = Callable[[torch.Tensor, str], None]


def _dist_all_reduce(t: torch.Tensor, op: str) -> None:
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)


def _global_logsumexp(x: torch.Tensor, dim: int | None, all_reduce: AllReduce | None) -> torch.Tensor:
    """log Σ exp(x) over ``dim`` (None = all) and over all processes, computed stably."""
    if dim is None:
        m = x.max().detach().clone()
    else:
        m = x.max(dim=dim).values
    if all_reduce is not None:
        all_reduce(m, "max")
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    if dim is None:
        s = torch.exp(x - m).sum()
    else:
        s = torch.exp(x - m.unsqueeze(dim)).sum(dim=dim)
    if all_reduce is not None:
        all_reduce(s, "sum")
    return torch.log(s) + m


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    eps: float = 0.05,
    iters: int = 3,
    world_size: int = 1,
    all_reduce: AllReduce | None = None,
    final_normalise: bool = True,
) -> torch.Tensor:
    """Soft balanced assignments from prototype scores.

    Args:
        scores: (M, K) scores of M samples (this process's share) against K prototypes.
        eps: entropy regularisation ε (0.05).
        iters: number of row/column alternations (3).
        world_size: number of processes sharing the problem; > 1 all-reduces the total and the
            row (prototype) sums and uses the column target ``1/(world_size·M)``.
        all_reduce: ``fn(tensor, op)`` with op ``"sum"``/``"max"`` reducing in place; defaults to
            ``torch.distributed.all_reduce`` when ``world_size > 1``.
        final_normalise: apply the final per-sample normalisation (True in the authors' code);
            False returns the iterate itself (rows of the result sum to ``1/M``).

    Returns:
        (M, K) float32 assignments; with ``final_normalise`` each row sums to 1.
    """
    if scores.ndim != 2:
        raise LeopartError(f"sinkhorn: scores must be (M, K), got shape {tuple(scores.shape)}")
    if eps <= 0:
        raise LeopartError(f"sinkhorn.eps: must be > 0, got {eps}")
    if world_size > 1 and all_reduce is None:
        if not (dist.is_available() and dist.is_initialized()):
            raise LeopartError("sinkhorn.world_size > 1 but torch.distributed is not initialised")
        all_reduce = _dist_all_reduce
    if world_size <= 1:
        all_reduce = None
    m_samples, k = scores.shape
    log_q = scores.detach().float().t() / eps  # (K, M)
    log_q = log_q - _global_logsumexp(log_q, None, all_reduce)  # Q /= sum(Q)
    log_r = -math.log(k)
    log_c = -math.log(world_size * m_samples) if m_samples > 0 else 0.0
    for _ in range(iters):
        # rows (prototypes) ← rows · (1/K) / rowsum; row sums span all processes
        log_q = log_q + (log_r - _global_logsumexp(log_q, 1, all_reduce)).unsqueeze(1)
        # columns (samples) ← cols · (1/(world·M)) / colsum; columns are local
        log_q = log_q + (log_c - torch.logsumexp(log_q, dim=0)).unsqueeze(0)
    if final_normalise:
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True)
    return torch.exp(log_q).t().contiguous()


@torch.no_grad()
def sinkhorn_reference(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """The authors' single-process formulation, literally (float64; for tests only)."""
    q = torch.exp(scores.double() / eps).t()
    q = q / q.sum()
    k, m = q.shape
    for _ in range(iters):
        q = q * ((1.0 / k) / q.sum(dim=1)).unsqueeze(1)
        q = q * ((1.0 / m) / q.sum(dim=0)).unsqueeze(0)
    return (q / q.sum(dim=0, keepdim=True)).t()

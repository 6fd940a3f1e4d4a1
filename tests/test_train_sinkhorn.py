"""Sinkhorn-Knopp (spec §3.5): agreement with the authors' formulation, marginals, stability."""

from __future__ import annotations

import threading

import pytest
import torch

from leopart.errors import LeopartError
from leopart.train.sinkhorn import sinkhorn, sinkhorn_reference


def _scores(m: int = 200, k: int = 30, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(m, k, generator=g) * 2 - 1) * scale


def test_matches_authors_formulation() -> None:
    s = _scores()
    torch.testing.assert_close(sinkhorn(s).double(), sinkhorn_reference(s), atol=1e-6, rtol=1e-4)


def test_marginals() -> None:
    m, k = 200, 30
    s = _scores(m, k)
    q = sinkhorn(s, iters=3, final_normalise=False)  # (M, K), before the final normalisation
    # samples (columns of Q) were scaled last: exactly 1/M each
    torch.testing.assert_close(q.sum(dim=1), torch.full((m,), 1 / m), atol=1e-7, rtol=1e-5)
    # prototypes (rows of Q) approach 1/K (3 iterations: within ~10 %; converged after 50)
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), 1 / k), atol=0, rtol=0.15)
    q50 = sinkhorn(s, iters=50, final_normalise=False)
    torch.testing.assert_close(q50.sum(dim=0), torch.full((k,), 1 / k), atol=0, rtol=1e-4)
    qn = sinkhorn(s)
    torch.testing.assert_close(qn.sum(dim=1), torch.ones(m), atol=1e-6, rtol=0)
    assert (qn >= 0).all()


def test_stable_with_large_scores() -> None:
    s = _scores(scale=5.0)  # exp(5/0.05) = exp(100): overflows float32 in the literal version
    naive = torch.exp(s / 0.05)
    assert not torch.isfinite(naive.sum())
    q = sinkhorn(s)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.double(), sinkhorn_reference(s), atol=1e-5, rtol=1e-3)
    huge = sinkhorn(_scores(scale=1e4))
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge.sum(dim=1), torch.ones(200), atol=1e-5, rtol=0)


def test_distributed_equals_concatenation() -> None:
    """Two simulated ranks (threads + barrier all_reduce) equal one process on all samples."""
    s = _scores(120, 20, seed=3)
    parts = [s[:60], s[60:]]
    barrier = threading.Barrier(2)
    slots: list[torch.Tensor | None] = [None, None]
    results: list[torch.Tensor | None] = [None, None]

    def make_reduce(rank: int):
        def reduce(t: torch.Tensor, op: str) -> None:
            slots[rank] = t.clone()
            barrier.wait()
            both = torch.stack([slots[0], slots[1]])
            red = both.sum(0) if op == "sum" else both.max(0).values
            barrier.wait()
            t.copy_(red)
        return reduce

    def run(rank: int) -> None:
        results[rank] = sinkhorn(parts[rank], world_size=2, all_reduce=make_reduce(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.testing.assert_close(torch.cat(results), sinkhorn(s), atol=1e-6, rtol=1e-5)


def test_bad_input() -> None:
    with pytest.raises(LeopartError, match="scores must be"):
        sinkhorn(torch.zeros(3))
    with pytest.raises(LeopartError, match="not initialised"):
        sinkhorn(torch.zeros(3, 2), world_size=2)

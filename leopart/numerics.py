"""Numerics whose bytes do not depend on the thread count.

Multi-threaded OpenBLAS splits a matrix product (and LAPACK's ``eigh``) differently for every
thread count, and the partial sums are rounded in a different order: the same ``(2048, 64)``
float32 ``x.T @ x`` differs in the last bits between 1 and 2 threads, and faiss' k-means (whose
distance computations are OpenBLAS sgemm calls from its bundled, OpenMP-threaded OpenBLAS) ends
with different centroids and labels. Downstream, k-means amplifies those bits into a different
table for every ``--cores``.

:func:`fixed_blas_threads` runs a block with every loaded BLAS library (numpy's and faiss')
limited to one thread, so each product is computed by the same single-threaded kernel in the
same order whatever the thread count of the job. faiss' bundled OpenBLAS is built for OpenMP and
follows the OpenMP thread count (which depends on which ``libgomp`` a process loaded first, e.g.
torch's), so :mod:`leopart.cluster.kmeans` also sets faiss to one OpenMP thread around its calls.
torch (feature extraction) does not go through these libraries.

What still differs is the kernel: OpenBLAS picks an instruction-set-specific kernel at load time
(``OPENBLAS_CORETYPE`` overrides it), and different kernels round differently; see the README
(*Measured figures*) for the resulting spread of the table.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["fixed_blas_threads", "blas_info"]

_lock = threading.Lock()
_depth = 0
_limiter: contextlib.AbstractContextManager | None = None


@contextlib.contextmanager
def fixed_blas_threads() -> Iterator[None]:
    """Limit every loaded BLAS library to one thread inside the block (re-entrant, cheap nested).

    The outermost entry scans the loaded libraries with threadpoolctl (about a millisecond) and
    restores their previous thread counts on exit; nested entries do nothing.
    """
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            from threadpoolctl import threadpool_limits

            _limiter = threadpool_limits(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


def blas_info() -> list[dict[str, object]]:
    """The loaded BLAS libraries: file, version, kernel (``architecture``) and thread count."""
    from threadpoolctl import threadpool_info

    keys = ("internal_api", "filepath", "version", "architecture", "threading_layer", "num_threads")
    return [{k: i.get(k) for k in keys} for i in threadpool_info() if i.get("user_api") == "blas"]

"""Cost of one-thread BLAS in PCA + k-means: pinned (as shipped) vs the job's BLAS threads.

Usage: python docs/experiments/scripts/bench_thread_determinism.py THREADS REPS
Toy-default-sized data (900 images x 16x16 tokens, dim 96): PCA to 50, K=50 spherical k-means.
"""

import contextlib
import importlib
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

import leopart.features.pca as P
from leopart.numerics import fixed_blas_threads

K = importlib.import_module("leopart.cluster.kmeans")  # the package re-exports a function of that name

threads, reps = int(sys.argv[1]), int(sys.argv[2])
faiss.omp_set_num_threads(threads)
rng = np.random.default_rng(0)
n, d = 230_400, 96
x = rng.standard_normal((n, d)).astype(np.float32) @ rng.standard_normal((d, d)).astype(np.float32)
tmp = Path(tempfile.mkdtemp())


def work() -> dict[str, float]:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    mean, scale = P.fit_standardiser([x], progress=False)
    model = P.fit_pca([x], mean, scale, dim=50, progress=False)
    t["pca_fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    P.transform_to([x], model, [tmp / "y.npy"], progress=False)
    t["pca_transform"] = time.perf_counter() - t0
    y = np.load(tmp / "y.npy")
    t0 = time.perf_counter()
    K.kmeans(y, K.KMeansParams(k=50, seed=0, spherical=True, nredo=1))
    t["kmeans_k50_sph_100it"] = time.perf_counter() - t0
    return t


res: dict[str, list[dict[str, float]]] = {"pinned": [], "unpinned": []}
for _ in range(reps):
    for mode in ("unpinned", "pinned"):
        ctx = contextlib.nullcontext if mode == "unpinned" else fixed_blas_threads
        P.fixed_blas_threads = K.fixed_blas_threads = ctx
        with threadpool_limits(threads, user_api="blas"):
            res[mode].append(work())
for mode, runs in res.items():
    print(mode, f"threads={threads}", {k: round(float(np.median([r[k] for r in runs])), 2) for k in runs[0]})

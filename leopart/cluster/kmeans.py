"""faiss k-means with the authors' settings, and foreground clustering at evaluation resolution.

:func:`kmeans` is the authors' ``cluster()`` (spec §5.1): ``faiss.Kmeans`` with ``niter=100``,
``nredo=5``, ``max_points_per_centroid=256``, final labels = nearest centroid of *every* vector
through the k-means index (``IndexFlatIP`` on the unnormalised vectors when spherical, else
``IndexFlatL2``). It runs in bounded memory on memmapped inputs of any size: faiss' own training
subsample (the first ``256·k`` entries of ``faiss.rand_perm(n, seed)``, in that order) is gathered
from the inputs — which may be several arrays treated as one concatenation, e.g. train and val —
and faiss is trained on exactly those rows, which gives bit-identical centroids to handing faiss
the whole array; labels are then assigned chunk by chunk, releasing memmap pages after each.

``KMeansParams.device = "cuda"`` (config ``kmeans.device``) trains and assigns on the GPU with the
``faiss-gpu`` build (``pip install ".[gpu]"``); results then match the CPU's only up to float
round-off.

:func:`fg_kmeans` is the authors' ``cluster_all`` with interpolated embeddings (spec §5.3) without
materialising the ``N·100·100`` upsampled rows. Both the CBFE foreground mask and the embeddings
at 100×100 are torch-nearest upsamplings of 28×28 token grids, so they are constant on the same
nearest blocks: the original's foreground rows are exactly the foreground tokens, token ``(r, c)``
replicated ``block_counts(h, 100)[r] · block_counts(w, 100)[c]`` times. Clustering them therefore
amounts to clustering foreground tokens with those integer multiplicities ("virtual pixels"):

* Training set: when there are more than ``max_points_per_centroid·k`` virtual pixels, faiss would
  train on exactly that many rows drawn uniformly without replacement from the virtual pixels. We
  draw the same number of *virtual pixel indices* uniformly without replacement (numpy
  ``Generator`` seeded with ``params.seed``), map each to its token (``searchsorted`` on the
  cumulative multiplicities) and gather those token vectors — one token can be drawn several
  times, exactly as replicated rows could be in the original. faiss then sees ``256·k`` points and
  does not subsample again. Otherwise the training set is every foreground token repeated by its
  multiplicity (at most ``256·k`` rows). The training set thus has the **same distribution** as the
  original's; it is not the same random stream (the original used faiss' internal ``rand_perm``
  over the materialised rows), so labels agree with the original only in distribution, as they
  would across faiss versions anyway (spec §12).
* Assignment: every virtual pixel of a token gets the token's label, so assigning each foreground
  token once (gathered chunk by chunk, memmaps welcome) and upsampling gives the original's
  100×100 labels exactly. Background tokens get label ``k``.

Thread count: faiss computes distances with OpenBLAS sgemm, which rounds differently for every
thread count. faiss' bundled OpenBLAS is built for OpenMP and follows the OpenMP thread count,
so training and assignment run with faiss on one OpenMP thread (and every BLAS on one thread,
:func:`leopart.numerics.fixed_blas_threads`); centroids, objective and labels are byte-identical
for any ``threads``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from leopart.errors import LeopartError
from leopart.io import release_pages
from leopart.numerics import fixed_blas_threads
from leopart.resample import block_counts

__all__ = [
    "FgFit",
    "KMeansParams",
    "KMeansResult",
    "assign_fg",
    "eval_block_weights",
    "fg_kmeans",
    "fit_fg_kmeans",
    "kmeans",
]

log = logging.getLogger(__name__)

#: Rows per faiss search call / per gather from a memmap (≈ 26 MB of float32 at d = 50).
ASSIGN_CHUNK = 1 << 17


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """faiss (OpenMP, and its OpenMP-built OpenBLAS, which follows the OpenMP thread count) and
    numpy's BLAS on one thread inside the block; the previous faiss thread count is restored."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with fixed_blas_threads():
            yield
    finally:
        faiss.omp_set_num_threads(before)


@dataclass(frozen=True)
class KMeansParams:
    """faiss k-means parameters (defaults = the authors' settings, spec §5.1).

    Attributes:
        k: number of clusters.
        seed: faiss seed (training subsample and initialisation); also seeds the virtual-pixel
            sample of :func:`fg_kmeans`.
        spherical: L2-normalise centroids after each update and assign by inner product.
        niter: Lloyd iterations per redo.
        nredo: restarts; the one with the best objective is kept.
        max_points_per_centroid: faiss trains on at most ``k·max_points_per_centroid`` points.
        min_points_per_centroid: faiss only warns below ``k·min_points_per_centroid`` points.
        device: ``"cpu"`` or ``"cuda"`` (faiss GPU build; config key ``kmeans.device``).
    """

    k: int
    seed: int = 0
    spherical: bool = False
    niter: int = 100
    nredo: int = 5
    max_points_per_centroid: int = 256
    min_points_per_centroid: int = 39
    device: str = "cpu"


@dataclass(frozen=True)
class KMeansResult:
    """Output of :func:`kmeans`.

    Attributes:
        labels: ``(n,)`` int32 nearest-centroid label of every input vector.
        centroids: ``(k, d)`` float32 (unit norm when spherical).
        objective: final faiss objective of the kept redo (sum of squared L2 distances, or sum of
            inner products when spherical) over the training set.
    """

    labels: np.ndarray
    centroids: np.ndarray
    objective: float


@dataclass(frozen=True)
class FgFit:
    """Centroids fitted by :func:`fit_fg_kmeans`.

    Attributes:
        centroids: ``(k, d)`` float32.
        objective: final faiss objective over the training set.
        n_virtual: number of foreground pixels at evaluation resolution (virtual rows).
        n_fg_tokens: number of foreground tokens.
        n_train: number of rows faiss was trained on.
        spherical: whether assignment is by inner product.
    """

    centroids: np.ndarray
    objective: float
    n_virtual: int
    n_fg_tokens: int
    n_train: int
    spherical: bool


def eval_block_weights(grid: tuple[int, int], eval_size: int | tuple[int, int]) -> np.ndarray:
    """Pixels at evaluation resolution that each token covers under torch legacy nearest.

    Args:
        grid: token grid ``(h, w)``, e.g. ``(28, 28)``.
        eval_size: evaluation size (square if an int), e.g. 100.

    Returns:
        ``(h, w)`` int64 ``block_counts(h, H)[r] * block_counts(w, W)[c]`` (sums to ``H·W``).
    """
    out_h, out_w = (eval_size, eval_size) if isinstance(eval_size, int) else eval_size
    return np.outer(block_counts(grid[0], out_h), block_counts(grid[1], out_w)).astype(np.int64)


def _check_params(params: KMeansParams, n: int, key: str) -> int:
    k = params.k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise LeopartError(f"{key}={k} must be a positive integer")
    if k > n:
        raise LeopartError(f"{key}={k} is larger than the number of points ({n})")
    if params.niter < 1 or params.nredo < 1:
        raise LeopartError(f"{key}: niter and nredo must be >= 1 (got {params.niter}, {params.nredo})")
    return int(k)


def gpu_available() -> bool:
    """True when the installed faiss is a GPU build and sees at least one CUDA device."""
    get = getattr(faiss, "get_num_gpus", None)
    return hasattr(faiss, "StandardGpuResources") and get is not None and get() > 0


def _check_device(params: KMeansParams) -> bool:
    """Whether to use the GPU; one-line error naming ``kmeans.device`` when it cannot."""
    if params.device == "cpu":
        return False
    if params.device != "cuda":
        raise LeopartError(f"kmeans.device = {params.device!r}: expected 'cpu' or 'cuda'")
    if not gpu_available():
        raise LeopartError(
            "kmeans.device = 'cuda' but faiss has no GPU here (faiss-cpu build or no CUDA device): "
            "install the faiss-gpu build (pip install '.[gpu]') on a GPU machine or set kmeans.device: cpu"
        )
    return True


def _train(x: np.ndarray, params: KMeansParams, key: str) -> faiss.Kmeans:
    """Train ``faiss.Kmeans`` on ``x`` ``(n, d)``; return the object (its index holds the centroids)."""
    k = _check_params(params, x.shape[0], key)
    gpu = _check_device(params)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not all(np.isfinite(x[i : i + ASSIGN_CHUNK]).all() for i in range(0, x.shape[0], ASSIGN_CHUNK)):
        raise LeopartError(f"{key}: the vectors to cluster contain NaN or infinite values")
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=int(params.niter),
        nredo=int(params.nredo),
        seed=int(params.seed),
        spherical=bool(params.spherical),
        max_points_per_centroid=int(params.max_points_per_centroid),
        min_points_per_centroid=int(params.min_points_per_centroid),
        verbose=False,
        gpu=gpu,
    )
    with _one_thread():
        km.train(x)
    if km.index.ntotal != k:  # pragma: no cover - faiss always leaves the centroids in the index
        km.index.reset()
        km.index.add(km.centroids)
    return km


def faiss_training_rows(n: int, params: KMeansParams) -> np.ndarray | None:
    """The rows faiss k-means trains on when given ``n`` vectors, in faiss' order, or None for all.

    faiss subsamples when ``n > k·max_points_per_centroid``: it takes the first
    ``k·max_points_per_centroid`` entries of ``rand_perm(n, seed)``. Returns those ``(m,)`` int64
    row indices (not sorted: their order is the training order, which seeds the initial
    centroids), or None when faiss uses every row in order.
    """
    budget = int(params.k) * int(params.max_points_per_centroid)
    if n <= budget:
        return None
    if n >= 2**31:
        raise LeopartError(f"kmeans: {n} vectors exceed faiss' 2^31 - 1 row limit of its subsampling")
    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, int(params.seed))
    return perm[:budget].astype(np.int64)


def _gather(parts: Sequence[np.ndarray], rows: np.ndarray | None) -> np.ndarray:
    """Rows of the concatenation of ``parts`` (each ``(n_i, d)``) as float32, in ``rows`` order.

    ``rows=None`` means all rows. Reads each part in sorted row order, then releases its pages.
    """
    d = parts[0].shape[1]
    if rows is None:
        out = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts]) if len(parts) > 1 \
            else np.array(parts[0], dtype=np.float32)
        for p in parts:
            release_pages(p)
        return out.reshape(-1, d)
    out = np.empty((rows.size, d), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    start = 0
    for p in parts:
        lo, hi = np.searchsorted(sorted_rows, [start, start + p.shape[0]])
        if hi > lo:
            out[order[lo:hi]] = p[sorted_rows[lo:hi] - start]
            release_pages(p)
        start += p.shape[0]
    return out


def _search(index: faiss.Index, x: np.ndarray, key: str) -> np.ndarray:
    """Nearest-centroid label ``(n,)`` int32 of ``x`` ``(n, d)`` (one chunk)."""
    with _one_thread():
        _, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    labels = idx[:, 0]
    if labels.size and labels.min() < 0:
        raise LeopartError(f"{key}: some vectors could not be assigned (NaN or infinite values)")
    return labels.astype(np.int32)


def _make_index(centroids: np.ndarray, spherical: bool) -> faiss.Index:
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    index = faiss.IndexFlatIP(centroids.shape[1]) if spherical else faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    return index


def kmeans(x: np.ndarray | Sequence[np.ndarray], params: KMeansParams, key: str = "kmeans.k") -> KMeansResult:
    """Cluster ``x`` with faiss k-means and label every vector (spec §5.1).

    Args:
        x: ``(n, d)`` vectors, or a list of ``(n_i, d)`` arrays clustered as their concatenation
            (e.g. train and val). Memmaps of any floating dtype are fine and are never read
            whole: the training rows are gathered exactly as faiss would subsample them
            (:func:`faiss_training_rows`), so centroids and labels equal ``faiss.Kmeans`` on the
            concatenated float32 array.
        params: k-means parameters.
        key: config key named in error messages.

    Returns:
        :class:`KMeansResult`; labels (of the concatenation) come from the k-means index
        (``IndexFlatIP`` on the unnormalised vectors when spherical), searched in chunks of
        :data:`ASSIGN_CHUNK` rows; memmap pages are released after every chunk.

    Raises:
        LeopartError: ``k < 1``, ``k > n``, non-2-D input, non-finite values, or
        ``device='cuda'`` without a faiss GPU build.
    """
    parts = [x] if isinstance(x, np.ndarray) else list(x)
    if not parts or any(p.ndim != 2 for p in parts):
        shapes = [tuple(p.shape) for p in parts]
        shown = shapes[0] if len(shapes) == 1 else shapes
        raise LeopartError(f"{key}: vectors to cluster must be 2-D (n, d), got shape {shown}")
    d = parts[0].shape[1]
    if any(p.shape[1] != d for p in parts):
        raise LeopartError(f"{key}: vectors to cluster have different dimensions {[p.shape[1] for p in parts]}")
    n = sum(p.shape[0] for p in parts)
    _check_params(params, n, key)
    _check_device(params)
    with _one_thread():
        train = _gather(parts, faiss_training_rows(n, params))
        km = _train(train, params, key)
        del train
        labels = np.empty(n, dtype=np.int32)
        offset = 0
        for p in parts:
            for start in range(0, p.shape[0], ASSIGN_CHUNK):
                chunk = np.ascontiguousarray(p[start : start + ASSIGN_CHUNK], dtype=np.float32)
                release_pages(p)
                if not np.isfinite(chunk).all():
                    raise LeopartError(f"{key}: the vectors to cluster contain NaN or infinite values")
                labels[offset + start : offset + start + chunk.shape[0]] = _search(km.index, chunk, key)
            offset += p.shape[0]
    return KMeansResult(
        labels=labels,
        centroids=np.asarray(km.centroids, dtype=np.float32).reshape(params.k, d),
        objective=float(km.obj[-1]) if km.obj is not None and len(km.obj) else 0.0,
    )


# --------------------------------------------------------------------------------------------
# Foreground clustering at evaluation resolution


def _as_lists(
    tokens: np.ndarray | Sequence[np.ndarray], fg: np.ndarray | Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    single = isinstance(tokens, np.ndarray)
    tok_list = [tokens] if single else list(tokens)
    fg_list = [fg] if isinstance(fg, np.ndarray) else list(fg)
    if len(tok_list) != len(fg_list) or not tok_list:
        raise LeopartError(
            f"foreground clustering: got {len(tok_list)} token arrays and {len(fg_list)} masks"
        )
    return tok_list, fg_list, single


def _flat_views(
    tok_list: list[np.ndarray], fg_list: list[np.ndarray], block_weights: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Validate shapes; return ``(N·h·w, d)`` token views and fg token flat indices per split."""
    bw = np.asarray(block_weights)
    if bw.ndim != 2 or bw.dtype.kind not in "iu" or (bw.size and bw.min() < 0):
        raise LeopartError(f"block weights must be a 2-D non-negative integer array, got {bw.dtype} {bw.shape}")
    h, w = bw.shape
    flats, fg_idx = [], []
    d = None
    for i, (tok, m) in enumerate(zip(tok_list, fg_list)):
        m = np.asarray(m)
        if m.ndim != 3 or m.shape[1:] != (h, w):
            raise LeopartError(f"foreground mask {i} has shape {m.shape}, expected (N, {h}, {w})")
        n = m.shape[0]
        if tok.ndim < 3 or tok.shape[0] != n or int(np.prod(tok.shape[1:-1])) != h * w:
            raise LeopartError(
                f"token array {i} has shape {tok.shape}, expected ({n}, {h}, {w}, d) to match its mask"
            )
        if d is None:
            d = tok.shape[-1]
        elif tok.shape[-1] != d:
            raise LeopartError(f"token arrays have different dimensions ({d} vs {tok.shape[-1]})")
        flats.append(tok.reshape(n * h * w, tok.shape[-1]))
        fg_idx.append(np.flatnonzero(m.reshape(-1).astype(bool, copy=False)))
    return flats, fg_idx, int(d)


def _sample_virtual_tokens(weights: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` virtual pixels uniformly without replacement; return their tokens.

    Token ``j`` owns ``weights[j]`` consecutive virtual pixels. Returns ``(n,)`` int64 token
    indices, sorted (a token appears at most ``weights[j]`` times).
    """
    cum = np.cumsum(weights, dtype=np.int64)  # end (exclusive) of each token's virtual range
    total = int(cum[-1]) if cum.size else 0
    rng = np.random.default_rng(seed)
    virtual = np.sort(rng.choice(total, size=n, replace=False))
    return np.searchsorted(cum, virtual, side="right").astype(np.int64)


def fit_fg_kmeans(
    tokens: np.ndarray | Sequence[np.ndarray],
    fg: np.ndarray | Sequence[np.ndarray],
    block_weights: np.ndarray,
    params: KMeansParams,
    key: str = "kmeans.k",
) -> tuple[FgFit, faiss.Index]:
    """Fit k-means centroids on the foreground pixels at evaluation resolution (virtually).

    See the module docstring for the sampling scheme (same distribution as the original's faiss
    subsample of the materialised ``(N·100·100, d)`` rows, different random stream).

    Args:
        tokens: ``(N, h, w, d)`` float32 token grid, or a list of them (e.g. train, val memmaps;
            ``(N, h·w, d)`` is accepted too).
        fg: ``(N, h, w)`` bool foreground mask (token resolution), or a list matching ``tokens``.
        block_weights: ``(h, w)`` int64 pixels per token at evaluation resolution
            (:func:`eval_block_weights`).
        params: k-means parameters.
        key: config key named in error messages.

    Returns:
        ``(fit, index)``: the centroids and a faiss index holding them (for assignment).
    """
    tok_list, fg_list, _ = _as_lists(tokens, fg)
    flats, fg_idx, d = _flat_views(tok_list, fg_list, block_weights)
    hw = np.asarray(block_weights).size
    bw_flat = np.asarray(block_weights, dtype=np.int64).reshape(-1)
    weights = [bw_flat[idx % hw] for idx in fg_idx]
    n_tokens = int(sum(len(i) for i in fg_idx))
    n_virtual = int(sum(int(wt.sum()) for wt in weights))
    _check_params(params, n_virtual, key)
    budget = int(params.max_points_per_centroid) * int(params.k)

    if n_virtual > budget:
        token_of = _sample_virtual_tokens(np.concatenate(weights), budget, int(params.seed))
        bounds = np.cumsum([0] + [len(i) for i in fg_idx])
        parts = []
        for s, flat in enumerate(flats):
            sel = token_of[(token_of >= bounds[s]) & (token_of < bounds[s + 1])] - bounds[s]
            if sel.size:
                parts.append(np.asarray(flat[fg_idx[s][sel]], dtype=np.float32))
                release_pages(flat)
        train = np.concatenate(parts) if parts else np.empty((0, d), np.float32)
    else:
        parts = []
        for flat, idx, wt in zip(flats, fg_idx, weights):
            if idx.size:
                parts.append(np.repeat(np.asarray(flat[idx], dtype=np.float32), wt, axis=0))
                release_pages(flat)
        train = np.concatenate(parts) if parts else np.empty((0, d), np.float32)

    km = _train(train, params, key)
    fit = FgFit(
        centroids=np.asarray(km.centroids, dtype=np.float32).reshape(params.k, d),
        objective=float(km.obj[-1]) if km.obj is not None and len(km.obj) else 0.0,
        n_virtual=n_virtual,
        n_fg_tokens=n_tokens,
        n_train=int(train.shape[0]),
        spherical=bool(params.spherical),
    )
    log.info(
        "%s=%d: %d fg tokens = %d fg pixels at eval resolution; trained on %d rows (objective %.6g)",
        key, params.k, n_tokens, n_virtual, fit.n_train, fit.objective,
    )
    return fit, km.index


def assign_fg(
    tokens: np.ndarray | Sequence[np.ndarray],
    fg: np.ndarray | Sequence[np.ndarray],
    centroids: np.ndarray | faiss.Index,
    spherical: bool = False,
    key: str = "kmeans.k",
) -> np.ndarray | list[np.ndarray]:
    """Label every foreground token with its nearest centroid; background tokens get label ``k``.

    Args:
        tokens: ``(N, h, w, d)`` float32 (or a list of them); rows are gathered chunk by chunk.
        fg: ``(N, h, w)`` bool (or a list matching ``tokens``).
        centroids: ``(k, d)`` float32 centroids, or a faiss index holding them.
        spherical: assign by inner product (``IndexFlatIP``) instead of L2; ignored for an index.
        key: config key named in error messages.

    Returns:
        ``(N, h, w)`` int32 labels in ``0..k`` (``k`` = background), a list if lists were given.
    """
    tok_list, fg_list, single = _as_lists(tokens, fg)
    index = centroids if isinstance(centroids, faiss.Index) else _make_index(centroids, spherical)
    k = int(index.ntotal)
    h, w = np.asarray(fg_list[0]).shape[1:]
    flats, fg_idx, d = _flat_views(tok_list, fg_list, np.ones((h, w), np.int64))
    if index.d != d:
        raise LeopartError(f"{key}: centroids have dimension {index.d}, tokens {d}")
    out = []
    with _one_thread():
        for flat, idx, m in zip(flats, fg_idx, fg_list):
            labels = np.full(flat.shape[0], k, dtype=np.int32)
            for start in range(0, idx.size, ASSIGN_CHUNK):
                rows = idx[start : start + ASSIGN_CHUNK]
                labels[rows] = _search(index, flat[rows], key)
                release_pages(flat)
            out.append(labels.reshape(np.asarray(m).shape))
    return out[0] if single else out


def fg_kmeans(
    tokens: np.ndarray | Sequence[np.ndarray],
    fg: np.ndarray | Sequence[np.ndarray],
    block_weights: np.ndarray,
    params: KMeansParams,
    key: str = "kmeans.k",
) -> np.ndarray | list[np.ndarray]:
    """Foreground-only k-means at evaluation resolution, computed at token resolution (spec §5.3).

    Equals the original ``cluster_all`` on nearest-upsampled embeddings and CBFE masks up to the
    training-sample random stream (module docstring): ``upsample_labels(result, 100)`` is the
    original's ``(N, 100, 100)`` label map, with ``k`` as the background label.

    Args:
        tokens: ``(N, h, w, d)`` float32 token grid (memmap fine) or a list (train, val, ...).
        fg: ``(N, h, w)`` bool foreground (CBFE) masks at token resolution, or a matching list.
        block_weights: ``(h, w)`` int64 eval pixels per token (:func:`eval_block_weights`).
        params: k-means parameters (``params.k`` foreground clusters).
        key: config key named in error messages.

    Returns:
        ``(N, h, w)`` int32 labels in ``0..k`` (a list of them if lists were given).
    """
    _, index = fit_fg_kmeans(tokens, fg, block_weights, params, key)
    return assign_fg(tokens, fg, index, params.spherical, key)

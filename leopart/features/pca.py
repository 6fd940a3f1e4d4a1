"""Streamed standardisation + PCA of token grids (spec §4.2, ``normalize_and_transform``).

The authors fit an sklearn ``StandardScaler`` on *all* tokens of the clustered set, transform them,
train ``faiss.PCAMatrix(D, 50)`` (``eigen_power=0``, no random rotation, ``max_points_per_d=1000``)
and project. This module reproduces those semantics without ever holding the raw tokens in memory
(train + val = 2,283,792 × 384 float32 = 3.5 GB):

* :func:`fit_standardiser` — one streamed pass; per-chunk mean / sum of squared deviations merged
  with Chan et al.'s parallel update in float64; population std; (near-)constant features get
  scale 1 exactly as sklearn ≥ 1.0 does.
* :func:`fit_pca` — if there are more than ``max_points_per_d · D`` rows, exactly that many are
  drawn uniformly without replacement (numpy ``Generator(PCG64(seed))``; faiss' own ``rand_perm``
  stream is not reproduced, so the subsample differs from faiss' — the estimator is the same),
  gathered chunk-wise in sorted order from the memmaps, standardised, and their covariance is
  accumulated in float64 with the same parallel update (each block is centred in float64; its
  cross products are computed in float32, which halves the dominant cost). Components are the top eigenvectors
  (``numpy.linalg.eigh``), equal to ``faiss.PCAMatrix`` on the same sample up to sign.
* Every BLAS/LAPACK call (block cross products, ``eigh``, the projection) runs on one thread
  (:func:`leopart.numerics.fixed_blas_threads`): threaded OpenBLAS rounds differently for every
  thread count, and k-means downstream amplifies those last bits into a different table.
* :func:`transform_to` — ``((x - mean) / scale - pca_mean) @ components.T`` chunk by chunk into
  atomically written ``.npy`` files.

Memory: inputs may be ``np.memmap``; pages of a memmap that were read are released from the
process (``madvise(MADV_DONTNEED)``, read-only/shared mappings only — the OS page cache keeps
them) after every chunk, so resident memory stays at a few chunk buffers instead of growing to
the file size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from leopart.errors import LeopartError
from leopart.io import PathLike, atomic_path, npy_writer, release_pages
from leopart.numerics import fixed_blas_threads

__all__ = [
    "PCAModel",
    "fit_standardiser",
    "subsample_indices",
    "fit_pca",
    "transform_to",
    "save_pca",
    "load_pca",
]


@dataclass
class PCAModel:
    """A fitted standardiser + PCA projection.

    Attributes:
        mean: ``(D,)`` float64 standardiser mean (over all fitted tokens).
        scale: ``(D,)`` float64 standardiser scale (population std, 1 for constant features).
        pca_mean: ``(D,)`` float64 mean of the *standardised* PCA training rows (≈ 0).
        components: ``(dim, D)`` float32 orthonormal rows, sorted by decreasing eigenvalue
            (faiss ``PCAMatrix.A``). Sign convention: the largest-magnitude entry of every row is
            positive (faiss leaves signs arbitrary; k-means does not care).
        eigenvalues: ``(dim,)`` float64 variances of the standardised rows along ``components``
            (faiss stores ``n_fit`` times these values).
        n_fit: number of rows the PCA was trained on (384,000 for ViT-S tokens with the default
            ``max_points_per_d``).
    """

    mean: np.ndarray
    scale: np.ndarray
    pca_mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    n_fit: int = 0

    @property
    def in_dim(self) -> int:
        """Input dimension ``D``."""
        return int(self.components.shape[1])

    @property
    def dim(self) -> int:
        """Output dimension."""
        return int(self.components.shape[0])

    def transform(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Project rows ``(n, D)`` to ``(n, dim)`` float32: ``((x - mean) / scale - pca_mean) @ components.T``.

        Computed in float32 (the bias ``components @ pca_mean`` in float64 once) with one BLAS
        thread, so the bytes do not depend on the thread count (:mod:`leopart.numerics`); ``out``
        may be a slice of a memmap to write into.
        """
        z = np.subtract(x, self.mean.astype(np.float32), dtype=np.float32)
        z *= (1.0 / self.scale).astype(np.float32)
        with fixed_blas_threads():
            y = np.matmul(z, np.ascontiguousarray(self.components.T, dtype=np.float32), out=out)
            y -= (self.components.astype(np.float64) @ self.pca_mean).astype(np.float32)
        return y


# --------------------------------------------------------------------------------------------
# helpers


def _name(arr: np.ndarray, i: int) -> str:
    fn = getattr(arr, "filename", None)
    return str(fn) if fn else f"tokens[{i}]"


def _as_rows(arrays: Sequence[np.ndarray] | np.ndarray, what: str = "tokens") -> list[np.ndarray]:
    """Validate token arrays ``(..., D)`` and return ``(n_i, D)`` row views (no copies for memmaps)."""
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    arrays = list(arrays)
    if not arrays:
        raise LeopartError(f"{what}: no token arrays given")
    rows: list[np.ndarray] = []
    dim = None
    for i, arr in enumerate(arrays):
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        if arr.ndim < 2:
            raise LeopartError(f"{_name(arr, i)}: {what} must have shape (N, ..., D), found {arr.shape}")
        if arr.dtype.kind not in "fiu":
            raise LeopartError(f"{_name(arr, i)}: {what} has non-numeric dtype {arr.dtype}")
        if dim is None:
            dim = arr.shape[-1]
        elif arr.shape[-1] != dim:
            raise LeopartError(
                f"{_name(arr, i)}: {what} have feature dimension {arr.shape[-1]}, expected {dim}"
            )
        if not arr.flags.c_contiguous:  # small in-memory arrays only; memmaps from np.load are contiguous
            arr = np.ascontiguousarray(arr)
        rows.append(arr.reshape(-1, arr.shape[-1]))
    return rows


def _release(arr: np.ndarray) -> None:
    """Drop the resident pages of a memmap from this process (:func:`leopart.io.release_pages`)."""
    release_pages(arr)


_STD_BLOCK_ROWS = 2048


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _check_positive(value: int, key: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise LeopartError(f"{key}: must be a positive integer, got {value!r}")
    return int(value)


class _MomentAccumulator:
    """Running count / mean / centred co-moment with Chan et al.'s parallel merge (float64).

    ``full=False`` keeps only the diagonal (sum of squared deviations per feature, ``(D,)``, float64
    throughout); ``full=True`` keeps the ``(D, D)`` matrix of centred cross products (block products
    in float32 after centring the block in float64, merged in float64).
    """

    def __init__(self, dim: int, full: bool) -> None:
        self.n = 0
        self.mean = np.zeros(dim, dtype=np.float64)
        self.m2 = np.zeros((dim, dim) if full else dim, dtype=np.float64)
        self.full = full

    def update(self, x: np.ndarray) -> None:
        """Merge a block ``x`` of shape ``(m, D)`` float64 (overwritten: centred in place)."""
        m = x.shape[0]
        if m == 0:
            return
        mb = x.mean(axis=0)
        x -= mb
        if self.full:
            # cross products of the (float64-centred) block in float32 — half the time of a float64
            # syrk, relative error ~1e-7 (faiss does the whole covariance in float32); summed
            # across blocks in float64
            xc = x.astype(np.float32)
            m2b = (xc.T @ xc).astype(np.float64)
        else:
            m2b = np.einsum("ij,ij->j", x, x)
        delta = mb - self.mean
        tot = self.n + m
        self.mean += delta * (m / tot)
        corr = self.n * m / tot
        self.m2 += m2b + (np.outer(delta, delta) if self.full else delta * delta) * corr
        self.n = tot


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise LeopartError(f"tokens: {what} is not finite — the token arrays contain NaN or inf")


# --------------------------------------------------------------------------------------------
# standardiser


def fit_standardiser(
    arrays: Sequence[np.ndarray] | np.ndarray,
    rows_per_chunk: int = 100_000,
    *,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit sklearn ``StandardScaler`` statistics over all rows of all arrays, streamed.

    Args:
        arrays: token arrays ``(N_i, ..., D)`` (typically ``(N_i, h, w, D)`` float32 memmaps); the
            rows of all arrays together form the fitted set.
        rows_per_chunk: rows read between releases of memmap pages (resident input is at most
            ``rows_per_chunk · D · 4`` bytes); statistics are merged per block of 2048 rows.
        progress: show a tqdm bar.

    Returns:
        ``(mean, scale)``, both ``(D,)`` float64: the mean and the population standard deviation
        (``ddof=0``); features that are constant (up to sklearn's round-off bound) get scale 1.
    """
    rows = _as_rows(arrays)
    rows_per_chunk = _check_positive(rows_per_chunk, "rows_per_chunk")
    dim = rows[0].shape[1]
    total = sum(r.shape[0] for r in rows)
    if total == 0:
        raise LeopartError("tokens: the token arrays are empty")
    acc = _MomentAccumulator(dim, full=False)
    with tqdm(total=total, unit="tok", desc="standardiser", disable=not progress, mininterval=2) as bar:
        for r in rows:
            for a, b in _chunks(r.shape[0], rows_per_chunk):
                # cache-sized float64 blocks are ~2x faster than one big conversion of the chunk
                for c, d in _chunks(b - a, _STD_BLOCK_ROWS):
                    acc.update(np.array(r[a + c : a + d], dtype=np.float64))
                _release(r)
                bar.update(b - a)
    mean = acc.mean
    var = acc.m2 / acc.n
    _check_finite(mean, "mean")
    _check_finite(var, "variance")
    # sklearn >= 1.0: _is_constant_feature + _handle_zeros_in_scale
    eps = np.finfo(np.float64).eps
    constant = var <= acc.n * eps * var + (acc.n * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant | (scale < 10 * eps)] = 1.0
    return mean, scale


# --------------------------------------------------------------------------------------------
# PCA


def subsample_indices(n_total: int, n_sample: int, seed: int) -> np.ndarray:
    """Sorted ``(n_sample,)`` int64 row indices drawn uniformly without replacement from ``n_total``.

    Deterministic for a given ``(n_total, n_sample, seed)`` (numpy ``default_rng(seed)``).
    """
    if not 0 <= n_sample <= n_total:
        raise ValueError(f"cannot draw {n_sample} of {n_total} rows")
    rng = np.random.default_rng(seed)
    idx = rng.choice(n_total, size=n_sample, replace=False).astype(np.int64)
    idx.sort()
    return idx


def fit_pca(
    arrays: Sequence[np.ndarray] | np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    dim: int = 50,
    max_points_per_d: int | None = 1000,
    seed: int = 1234,
    *,
    rows_per_chunk: int = 16_384,
    progress: bool = True,
) -> PCAModel:
    """Fit a PCA on standardised rows with ``faiss.PCAMatrix`` semantics (``eigen_power=0``).

    Args:
        arrays: token arrays ``(N_i, ..., D)``; their rows, concatenated in order, are the data.
        mean, scale: ``(D,)`` standardiser from :func:`fit_standardiser`; rows are fitted as
            ``(x - mean) / scale``.
        dim: number of output components (config key ``pca.dim``), ``1 ≤ dim ≤ D``.
        max_points_per_d: if the total row count ``n`` exceeds ``max_points_per_d · D``, exactly
            that many rows are drawn (uniformly, without replacement, ``seed``) as faiss does;
            ``None`` uses all rows.
        seed: subsample seed (faiss' fixed internal seed is 1234).
        rows_per_chunk: rows gathered / converted to float64 at a time.
        progress: show a tqdm bar.

    Returns:
        :class:`PCAModel`; ``pca_mean`` is the mean of the standardised training rows and the
        covariance is the population covariance (``/ n``), accumulated in float64 from per-block
        float32 cross products of block-centred rows.
    """
    rows = _as_rows(arrays)
    d_in = rows[0].shape[1]
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= d_in:
        raise LeopartError(f"pca.dim: must be an integer in 1..{d_in} (the token dimension), got {dim!r}")
    rows_per_chunk = _check_positive(rows_per_chunk, "rows_per_chunk")
    mean = np.asarray(mean, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if mean.shape != (d_in,) or scale.shape != (d_in,):
        raise LeopartError(
            f"pca: standardiser has shapes {mean.shape}/{scale.shape}, expected ({d_in},) for the tokens"
        )
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)) or not np.all(np.isfinite(mean)):
        raise LeopartError("pca: standardiser scale must be positive and finite")
    sizes = np.array([r.shape[0] for r in rows], dtype=np.int64)
    total = int(sizes.sum())
    if max_points_per_d is not None:
        max_points_per_d = _check_positive(max_points_per_d, "pca.max_points_per_d")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LeopartError(f"pca.seed: must be a non-negative integer, got {seed!r}")
    n_max = None if max_points_per_d is None else max_points_per_d * d_in
    sample = None if n_max is None or total <= n_max else subsample_indices(total, n_max, seed)
    n_fit = total if sample is None else len(sample)
    if n_fit < 2:
        raise LeopartError(f"tokens: PCA needs at least 2 rows, got {n_fit}")

    acc = _MomentAccumulator(d_in, full=True)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    blas = fixed_blas_threads()  # thread-count-independent cross products and eigh
    with blas, tqdm(total=n_fit, unit="tok", desc="pca fit", disable=not progress, mininterval=2) as bar:
        for k, r in enumerate(rows):
            if sample is None:
                blocks = (slice(a, b) for a, b in _chunks(r.shape[0], rows_per_chunk))
            else:
                lo, hi = np.searchsorted(sample, [starts[k], starts[k + 1]])
                local = sample[lo:hi] - starts[k]
                blocks = (local[a:b] for a, b in _chunks(len(local), rows_per_chunk))
            for sel in blocks:
                x = np.array(r[sel], dtype=np.float64)
                _release(r)
                x -= mean
                x /= scale
                acc.update(x)
                bar.update(x.shape[0])
    cov = acc.m2 / acc.n
    _check_finite(cov, "covariance")
    with fixed_blas_threads():
        evals, evecs = np.linalg.eigh(cov)  # ascending eigenvalues
    order = np.arange(d_in)[::-1][:dim]
    comps = evecs[:, order].T  # (dim, D)
    flip = comps[np.arange(dim), np.argmax(np.abs(comps), axis=1)] < 0
    comps[flip] *= -1
    return PCAModel(
        mean=mean.copy(),
        scale=scale.copy(),
        pca_mean=acc.mean.copy(),
        components=np.ascontiguousarray(comps, dtype=np.float32),
        eigenvalues=np.maximum(evals[order], 0.0),
        n_fit=int(n_fit),
    )


# --------------------------------------------------------------------------------------------
# transform and persistence


def transform_to(
    arrays_in: Sequence[np.ndarray] | np.ndarray,
    model: PCAModel,
    out_paths: Sequence[PathLike] | PathLike,
    rows_per_chunk: int = 100_000,
    *,
    progress: bool = True,
) -> None:
    """Project token arrays and write each as ``.npy`` ``(N_i, ..., dim)`` float32 atomically.

    ``y = ((x - mean) / scale - pca_mean) @ components.T``, computed in float32 in blocks of 2048
    rows (the bias ``components @ pca_mean`` is formed in float64 once) with one BLAS thread, so
    the output bytes do not depend on the thread count; memmap pages are released every
    ``rows_per_chunk`` rows.

    Args:
        arrays_in: token arrays ``(N_i, h, w, D)`` (memmaps welcome).
        model: fitted :class:`PCAModel` with ``in_dim == D``.
        out_paths: one output path per input array (a single path if a single array is given).
        rows_per_chunk: rows between releases of input/output memmap pages.
        progress: show a tqdm bar.
    """
    single = isinstance(arrays_in, np.ndarray)
    arrays = [arrays_in] if single else list(arrays_in)
    paths = [out_paths] if isinstance(out_paths, (str, os.PathLike)) else list(out_paths)
    if len(paths) != len(arrays):
        raise LeopartError(f"pca: {len(arrays)} token arrays but {len(paths)} output paths")
    rows = _as_rows(arrays)
    rows_per_chunk = _check_positive(rows_per_chunk, "rows_per_chunk")
    if rows[0].shape[1] != model.in_dim:
        raise LeopartError(
            f"pca: tokens have dimension {rows[0].shape[1]} but the PCA model expects {model.in_dim}"
        )
    total = sum(r.shape[0] for r in rows)
    blas = fixed_blas_threads()
    with blas, tqdm(total=total, unit="tok", desc="pca transform", disable=not progress, mininterval=2) as bar:
        for arr, r, path in zip(arrays, rows, paths, strict=True):
            shape = tuple(arr.shape[:-1]) + (model.dim,)
            with npy_writer(path, shape, np.float32) as out:
                out_rows = out.reshape(-1, model.dim)
                for a, b in _chunks(r.shape[0], rows_per_chunk):
                    # cache-sized blocks: ~3x faster than whole-chunk temporaries
                    for c, d in _chunks(b - a, _STD_BLOCK_ROWS):
                        model.transform(r[a + c : a + d], out=out_rows[a + c : a + d])
                    _release(r)
                    _release(out_rows)
                    bar.update(b - a)
                del out_rows


_NPZ_KEYS = ("mean", "scale", "pca_mean", "components", "eigenvalues", "n_fit")


def save_pca(path: PathLike, model: PCAModel) -> None:
    """Write ``model`` as an uncompressed ``.npz`` (keys = field names) atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            mean=np.asarray(model.mean, dtype=np.float64),
            scale=np.asarray(model.scale, dtype=np.float64),
            pca_mean=np.asarray(model.pca_mean, dtype=np.float64),
            components=np.asarray(model.components, dtype=np.float32),
            eigenvalues=np.asarray(model.eigenvalues, dtype=np.float64),
            n_fit=np.int64(model.n_fit),
        )


def load_pca(path: PathLike) -> PCAModel:
    """Read a model written by :func:`save_pca`; missing/corrupt files raise :class:`LeopartError`."""
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: PCA model file is missing")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise LeopartError(f"{p}: cannot read PCA model ({type(exc).__name__}: {exc})") from None
    missing = [k for k in _NPZ_KEYS if k not in data]
    if missing:
        raise LeopartError(f"{p}: PCA model lacks {', '.join(missing)}")
    comps = data["components"]
    if comps.ndim != 2:
        raise LeopartError(f"{p}: PCA components must be 2-D, found shape {comps.shape}")
    dim, d_in = comps.shape
    for key, n in (("mean", d_in), ("scale", d_in), ("pca_mean", d_in), ("eigenvalues", dim)):
        if data[key].shape != (n,):
            raise LeopartError(f"{p}: PCA {key} has shape {data[key].shape}, expected ({n},)")
    return PCAModel(
        mean=data["mean"].astype(np.float64),
        scale=data["scale"].astype(np.float64),
        pca_mean=data["pca_mean"].astype(np.float64),
        components=comps.astype(np.float32),
        eigenvalues=data["eigenvalues"].astype(np.float64),
        n_fit=int(data["n_fit"]),
    )

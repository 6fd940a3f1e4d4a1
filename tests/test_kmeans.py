"""Tests for leopart.cluster.kmeans (spec §5)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from leopart.cluster import (
    KMeansParams,
    assign_fg,
    eval_block_weights,
    fg_kmeans,
    fit_fg_kmeans,
    kmeans,
)
from leopart.cluster.kmeans import _sample_virtual_tokens
from leopart.errors import LeopartError
from leopart.resample import block_counts, nearest_indices, upsample_labels

FAST = dict(niter=20, nredo=2)


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """Tiny problems: OpenMP start-up/spinning on a shared 2-core machine dominates otherwise."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _blobs(seed: int = 0, n_per: int = 200, d: int = 8, k: int = 4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 20, size=(k, d))
    truth = np.repeat(np.arange(k), n_per)
    x = (centres[truth] + rng.normal(0, 0.5, size=(k * n_per, d))).astype(np.float32)
    return x, truth


def test_blobs_recovered() -> None:
    x, truth = _blobs()
    res = kmeans(x, KMeansParams(k=4, **FAST))
    assert res.labels.dtype == np.int32 and res.labels.shape == (x.shape[0],)
    assert res.centroids.shape == (4, 8) and res.centroids.dtype == np.float32
    # each true blob maps to exactly one label and vice versa
    pairs = set(zip(truth.tolist(), res.labels.tolist()))
    assert len(pairs) == 4 and len({p for _, p in pairs}) == 4
    # labels are the L2-nearest centroids
    d2 = ((x[:, None, :] - res.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(res.labels, d2.argmin(1))
    assert res.objective > 0


def test_seed_determinism() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    a = kmeans(x, KMeansParams(k=7, seed=3, **FAST))
    b = kmeans(x, KMeansParams(k=7, seed=3, **FAST))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_training_subsample_labels_all_points() -> None:
    """faiss trains on 256·k points only (max_points_per_centroid) but every point is labelled."""
    x, _ = _blobs(n_per=400)
    res = kmeans(x, KMeansParams(k=4, max_points_per_centroid=20, min_points_per_centroid=1, **FAST))
    assert res.labels.shape == (1600,) and len(np.unique(res.labels)) == 4


def test_k_errors() -> None:
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(LeopartError, match=r"^kmeans\.k=10 is larger than the number of points \(5\)$"):
        kmeans(x, KMeansParams(k=10))
    with pytest.raises(LeopartError, match=r"cd\.k=0"):
        kmeans(x, KMeansParams(k=0), key="cd.k")
    bad = np.ones((20, 3), np.float32)
    bad[3, 1] = np.nan
    with pytest.raises(LeopartError, match="NaN"):
        kmeans(bad, KMeansParams(k=2))


def test_spherical_groups_by_direction() -> None:
    """Two directions, each at two very different norms: cosine k-means splits by direction,
    L2 k-means does not; spherical labels are argmax inner product with unit centroids on the
    unnormalised vectors."""
    rng = np.random.default_rng(2)
    n = 200
    angle = np.concatenate([rng.normal(0.0, 0.05, n), rng.normal(np.pi / 2, 0.05, n)])
    norm = np.where(rng.random(2 * n) < 0.5, 1.0, 30.0)
    x = np.stack([np.cos(angle), np.sin(angle)], 1) * norm[:, None]
    x = x.astype(np.float32)
    direction = np.repeat([0, 1], n)

    sph = kmeans(x, KMeansParams(k=2, spherical=True, min_points_per_centroid=1, **FAST))
    np.testing.assert_allclose(np.linalg.norm(sph.centroids, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sph.labels, (x @ sph.centroids.T).argmax(1))
    assert len(set(zip(direction.tolist(), sph.labels.tolist()))) == 2  # split by direction

    l2 = kmeans(x, KMeansParams(k=2, spherical=False, min_points_per_centroid=1, **FAST))
    assert len(set(zip(direction.tolist(), l2.labels.tolist()))) > 2  # not split by direction
    # with the L2 centroids, inner-product and L2 assignment disagree on some points
    d2 = ((x[:, None] - l2.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(l2.labels, d2.argmin(1))
    assert (d2.argmin(1) != (x @ l2.centroids.T).argmax(1)).any()


# --------------------------------------------------------------------------- fg_kmeans


def _fg_case(seed: int = 0, n: int = 3, g: int = 5, d: int = 4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(3, d))
    lab = rng.integers(0, 3, size=(n, g, g))
    tokens = (centres[lab] + rng.normal(0, 1, size=(n, g, g, d))).astype(np.float32)
    fg = rng.random((n, g, g)) < 0.6
    return tokens, fg


def test_block_weights() -> None:
    bw = eval_block_weights((28, 28), 100)
    assert bw.shape == (28, 28) and bw.sum() == 10000
    assert bw[0, 0] == 16 and bw[0, 2] == 12 and bw[2, 2] == 9
    np.testing.assert_array_equal(bw, np.outer(block_counts(28, 100), block_counts(28, 100)))


def test_sample_virtual_tokens() -> None:
    w = np.array([3, 1, 4, 2, 0, 5], dtype=np.int64)
    full = _sample_virtual_tokens(w, int(w.sum()), seed=0)
    np.testing.assert_array_equal(np.bincount(full, minlength=6), w)  # every virtual pixel once
    part = _sample_virtual_tokens(w, 6, seed=1)
    counts = np.bincount(part, minlength=6)
    assert counts.sum() == 6 and (counts <= w).all()  # without replacement over virtual pixels
    # uniform over virtual pixels: token frequency ∝ weight
    freq = np.zeros(6)
    for s in range(300):
        freq += np.bincount(_sample_virtual_tokens(w, 5, seed=s), minlength=6)
    np.testing.assert_allclose(freq / freq.sum(), w / w.sum(), atol=0.03)


@pytest.mark.parametrize("max_pts", [2, 1000])  # sampled path / all-virtual-rows path
def test_fg_kmeans_equals_brute_force_at_eval_resolution(max_pts: int) -> None:
    tokens, fg = _fg_case()
    size = 12  # 5 -> 12: blocks 3,2,3,2,2 (non-trivial weights)
    bw = eval_block_weights((5, 5), size)
    params = KMeansParams(k=3, seed=0, max_points_per_centroid=max_pts, min_points_per_centroid=1, **FAST)
    fit, index = fit_fg_kmeans(tokens, fg, bw, params)
    assert fit.n_fg_tokens == int(fg.sum())
    assert fit.n_virtual == int((fg * bw).sum())
    assert fit.n_train == min(fit.n_virtual, max_pts * 3)
    labels = assign_fg(tokens, fg, fit.centroids)
    np.testing.assert_array_equal(labels, fg_kmeans(tokens, fg, bw, params))
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels == 3, ~fg)  # bg label = k exactly where fg is False

    # brute force: materialise the 12x12 embeddings and mask, assign with the same centroids
    rows, cols = nearest_indices(5, size), nearest_indices(5, size)
    emb = tokens[:, rows[:, None], cols[None, :]]  # (N, 12, 12, d)
    fg_up = upsample_labels(fg, size)
    ref = np.full(fg_up.shape, 3, dtype=np.int64)
    ref[fg_up] = index.search(np.ascontiguousarray(emb[fg_up]), 1)[1][:, 0]
    np.testing.assert_array_equal(upsample_labels(labels, size), ref)
    assert fit.n_virtual == int(fg_up.sum())


def test_fg_kmeans_lists_equal_concatenation(tmp_path) -> None:
    tokens, fg = _fg_case(seed=1, n=4)
    bw = eval_block_weights((5, 5), 12)
    params = KMeansParams(k=3, seed=2, max_points_per_centroid=4, min_points_per_centroid=1, **FAST)
    mm = np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype=np.float32, shape=tokens.shape)
    mm[:] = tokens
    whole = fg_kmeans(tokens, fg, bw, params)
    parts = fg_kmeans([mm[:1], mm[1:]], [fg[:1], fg[1:]], bw, params)
    assert isinstance(parts, list) and len(parts) == 2
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # (N, h*w, d) token layout is accepted too
    np.testing.assert_array_equal(fg_kmeans(tokens.reshape(4, 25, 4), fg, bw, params), whole)


def test_fg_kmeans_spherical_and_errors() -> None:
    tokens, fg = _fg_case(seed=3)
    bw = eval_block_weights((5, 5), 12)
    params = KMeansParams(k=3, spherical=True, min_points_per_centroid=1, **FAST)
    fit, index = fit_fg_kmeans(tokens, fg, bw, params)
    assert isinstance(index, faiss.IndexFlatIP)
    labels = assign_fg(tokens, fg, fit.centroids, spherical=True)
    np.testing.assert_array_equal(labels[fg], (tokens[fg] @ fit.centroids.T).argmax(1))
    with pytest.raises(LeopartError, match=r"fg\.k=10000 is larger than the number of points"):
        fg_kmeans(tokens, fg, bw, KMeansParams(k=10000), key="fg.k")
    with pytest.raises(LeopartError, match="shape"):
        fg_kmeans(tokens, fg[:, :4], bw, params)


def test_results_do_not_depend_on_the_thread_count() -> None:
    """faiss' distance sgemm rounds differently per OpenMP/BLAS thread count; results must not."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((60, 50)).astype(np.float32)
    x = (centres[rng.integers(0, 60, 20_000)] + 0.9 * rng.standard_normal((20_000, 50))).astype(np.float32)
    tokens = x.reshape(200, 10, 10, 50)
    fg = rng.random((200, 10, 10)) < 0.7
    weights = eval_block_weights((10, 10), 23)
    runs = {}
    before = faiss.omp_get_max_threads()
    try:
        for threads in (1, 2, 3):
            faiss.omp_set_num_threads(threads)
            plain = kmeans(x, KMeansParams(k=50, seed=1, niter=10, nredo=1))
            sph = kmeans(x, KMeansParams(k=40, seed=2, niter=5, nredo=1, spherical=True))
            fgl = fg_kmeans(tokens, fg, weights, KMeansParams(k=30, seed=0, niter=5, nredo=1))
            runs[threads] = (plain.labels, plain.centroids, np.float64(plain.objective),
                             sph.labels, sph.centroids, np.float64(sph.objective), fgl)
    finally:
        faiss.omp_set_num_threads(before)
    for threads in (2, 3):
        for a, b in zip(runs[1], runs[threads]):
            assert a.tobytes() == b.tobytes()


# ------------------------------------------------------------------ bounded memory and devices


@pytest.mark.parametrize("spherical", [False, True])
def test_streamed_kmeans_equals_faiss_on_the_concatenation(tmp_path, spherical: bool) -> None:
    """Parts (float16 memmaps) give bit-identical centroids/labels to faiss on the whole float32 array."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6000, 6)).astype(np.float16)
    np.save(tmp_path / "a.npy", x[:3500])
    np.save(tmp_path / "b.npy", x[3500:])
    parts = [np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")]
    params = KMeansParams(k=5, seed=7, spherical=spherical, niter=15, nredo=2, max_points_per_centroid=100)
    res = kmeans(parts, params)  # 6000 > 5 * 100: faiss would subsample 500 rows
    ref = faiss.Kmeans(6, 5, niter=15, nredo=2, seed=7, spherical=spherical, max_points_per_centroid=100,
                       min_points_per_centroid=39)
    full = x.astype(np.float32)
    ref.train(full)
    np.testing.assert_array_equal(res.centroids, ref.centroids)
    np.testing.assert_array_equal(res.labels, ref.index.search(full, 1)[1][:, 0])
    assert res.objective == pytest.approx(float(ref.obj[-1]), rel=0, abs=0)


def test_kmeans_on_cuda_without_gpu_names_the_key() -> None:
    from leopart.cluster.kmeans import gpu_available

    if gpu_available():
        pytest.skip("a faiss GPU is available here")
    x, _ = _blobs()
    with pytest.raises(LeopartError, match=r"^kmeans.device = 'cuda' but faiss has no GPU"):
        kmeans(x, KMeansParams(k=4, device="cuda", **FAST))
    with pytest.raises(LeopartError, match=r"kmeans.device = 'cuda'"):
        fg_kmeans(x.reshape(8, 10, 10, 8), np.ones((8, 10, 10), bool), np.ones((10, 10), np.int64),
                  KMeansParams(k=4, device="cuda", **FAST))

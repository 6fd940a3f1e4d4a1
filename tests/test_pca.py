"""Tests for leopart.features.pca (spec §4.2): streamed standardiser + faiss-style PCA."""

from __future__ import annotations

import numpy as np
import pytest

from leopart.errors import LeopartError
from leopart.features.pca import (
    PCAModel,
    fit_pca,
    fit_standardiser,
    load_pca,
    save_pca,
    subsample_indices,
    transform_to,
)

D = 24


def _tokens(seed: int = 0) -> list[np.ndarray]:
    """Two token grids (N_i, 4, 4, D) float32 with a well separated spectrum and non-zero mean."""
    rng = np.random.default_rng(seed)
    scales = 2.0 ** (-np.arange(D) / 3.0)
    rot, _ = np.linalg.qr(rng.standard_normal((D, D)))
    offset = rng.standard_normal(D) * 3
    out = []
    for n in (30, 25):
        x = (rng.standard_normal((n * 16, D)) * scales) @ rot.T * 2.5 + offset
        out.append(x.astype(np.float32).reshape(n, 4, 4, D))
    return out


def _rows(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays]).astype(np.float64)


def _abs_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.abs(np.sum(a * b, axis=1))


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 100, 100_000])
def test_standardiser_matches_numpy(rows_per_chunk: int) -> None:
    arrays = _tokens()
    arrays[1][..., 5] = 4.25  # constant in the second array only -> not constant overall
    x = _rows(arrays)
    mean, scale = fit_standardiser(arrays, rows_per_chunk=rows_per_chunk, progress=False)
    assert mean.dtype == np.float64 and scale.dtype == np.float64
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scale, x.std(axis=0), rtol=1e-10)


def test_standardiser_constant_feature_gets_scale_one() -> None:
    arrays = _tokens()
    for a in arrays:
        a[..., 3] = 7.1  # float32 constant: variance is round-off only
        a[..., 4] = 0.0
    mean, scale = fit_standardiser(arrays, rows_per_chunk=33, progress=False)
    assert scale[3] == 1.0 and scale[4] == 1.0
    assert mean[3] == pytest.approx(np.float32(7.1), rel=1e-12)


def test_pca_matches_faiss_on_same_subsample() -> None:
    faiss = pytest.importorskip("faiss")
    arrays = _tokens(1)
    x = _rows(arrays)
    n_total = x.shape[0]  # 880
    mean, scale = fit_standardiser(arrays, progress=False)
    model = fit_pca(arrays, mean, scale, dim=6, max_points_per_d=20, seed=7, progress=False)
    assert model.n_fit == 20 * D < n_total
    assert model.components.shape == (6, D) and model.components.dtype == np.float32

    sample = ((x[subsample_indices(n_total, 20 * D, 7)] - mean) / scale).astype(np.float32)
    ref = faiss.PCAMatrix(D, 6)  # defaults: eigen_power 0, no rotation; 480 < 1000*D: no subsample
    ref.train(np.ascontiguousarray(sample))
    ref_a = faiss.vector_to_array(ref.A).reshape(6, D)
    assert np.all(_abs_cos(model.components, ref_a) > 1 - 1e-5)
    np.testing.assert_allclose(model.pca_mean, faiss.vector_to_array(ref.mean), atol=1e-5)
    # faiss stores eigenvalues of the un-normalised scatter matrix (n x variance)
    np.testing.assert_allclose(
        model.eigenvalues * model.n_fit, faiss.vector_to_array(ref.eigenvalues)[:6], rtol=1e-4
    )
    # the whole projection agrees (up to sign per output dimension)
    ours = (sample.astype(np.float64) - model.pca_mean) @ model.components.T.astype(np.float64)
    theirs = ref.apply(sample)
    signs = np.sign(np.sum(ours * theirs, axis=0))
    np.testing.assert_allclose(ours * signs, theirs, atol=2e-4)


def test_pca_all_rows_matches_numpy() -> None:
    arrays = _tokens(2)
    x = _rows(arrays)
    mean, scale = fit_standardiser(arrays, progress=False)
    model = fit_pca(arrays, mean, scale, dim=5, max_points_per_d=None, rows_per_chunk=37, progress=False)
    z = (x - mean) / scale
    assert model.n_fit == x.shape[0]
    np.testing.assert_allclose(model.pca_mean, z.mean(axis=0), atol=1e-12)
    evals, evecs = np.linalg.eigh(np.cov(z.T, bias=True))
    order = np.argsort(evals)[::-1][:5]
    assert np.all(_abs_cos(model.components, evecs[:, order].T) > 1 - 1e-6)
    np.testing.assert_allclose(model.eigenvalues, evals[order], rtol=1e-5)
    # orthonormal rows, largest-magnitude entry positive
    np.testing.assert_allclose(model.components @ model.components.T, np.eye(5), atol=1e-6)
    assert np.all(model.components[np.arange(5), np.abs(model.components).argmax(1)] > 0)
    # no subsampling when n <= max_points_per_d * D
    assert fit_pca(arrays, mean, scale, dim=5, max_points_per_d=1000, progress=False).n_fit == x.shape[0]


def test_subsample_is_deterministic() -> None:
    a = subsample_indices(10_000, 300, 1234)
    assert len(a) == len(np.unique(a)) == 300 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, subsample_indices(10_000, 300, 1234))
    assert not np.array_equal(a, subsample_indices(10_000, 300, 1235))
    arrays = _tokens(3)
    mean, scale = fit_standardiser(arrays, progress=False)
    m1 = fit_pca(arrays, mean, scale, dim=4, max_points_per_d=10, progress=False)
    m2 = fit_pca(arrays, mean, scale, dim=4, max_points_per_d=10, progress=False)
    m3 = fit_pca(arrays, mean, scale, dim=4, max_points_per_d=10, seed=99, progress=False)
    np.testing.assert_array_equal(m1.components, m2.components)
    np.testing.assert_array_equal(m1.pca_mean, m2.pca_mean)
    assert not np.array_equal(m1.pca_mean, m3.pca_mean)


def test_transform_and_memmap_inputs(tmp_path) -> None:
    arrays = _tokens(4)
    paths = []
    for i, a in enumerate(arrays):
        p = tmp_path / f"tok{i}.npy"
        np.save(p, a)
        paths.append(p)
    mm = [np.load(p, mmap_mode="r") for p in paths]
    mean, scale = fit_standardiser(mm, rows_per_chunk=50, progress=False)
    mean_ref, scale_ref = fit_standardiser(arrays, progress=False)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scale, scale_ref, rtol=1e-12)
    model = fit_pca(mm, mean, scale, dim=7, max_points_per_d=15, rows_per_chunk=40, progress=False)
    model_ref = fit_pca(arrays, mean, scale, dim=7, max_points_per_d=15, progress=False)
    np.testing.assert_allclose(model.components, model_ref.components, atol=1e-6)

    outs = [tmp_path / "out" / "train.npy", tmp_path / "out" / "val.npy"]
    transform_to(mm, model, outs, rows_per_chunk=29, progress=False)
    for a, p in zip(arrays, outs, strict=True):
        y = np.load(p)
        assert y.shape == a.shape[:-1] + (7,) and y.dtype == np.float32
        ref = (((a.astype(np.float64) - model.mean) / model.scale) - model.pca_mean) @ model.components.T.astype(
            np.float64
        )
        np.testing.assert_allclose(y, ref, atol=2e-5, rtol=1e-5)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["train.npy", "val.npy"]  # no temp files


def test_dim_errors_name_the_key() -> None:
    arrays = _tokens()
    mean, scale = fit_standardiser(arrays, progress=False)
    with pytest.raises(LeopartError, match="pca.dim"):
        fit_pca(arrays, mean, scale, dim=D + 1, progress=False)
    with pytest.raises(LeopartError, match="pca.dim"):
        fit_pca(arrays, mean, scale, dim=0, progress=False)
    with pytest.raises(LeopartError, match="pca.seed"):
        fit_pca(arrays, mean, scale, dim=3, seed=-1, progress=False)
    with pytest.raises(LeopartError, match="feature dimension"):
        fit_standardiser([arrays[0], arrays[1][..., :5]], progress=False)


def test_save_load_roundtrip(tmp_path) -> None:
    arrays = _tokens()
    mean, scale = fit_standardiser(arrays, progress=False)
    model = fit_pca(arrays, mean, scale, dim=3, progress=False)
    p = tmp_path / "pca.npz"
    save_pca(p, model)
    back = load_pca(p)
    assert isinstance(back, PCAModel) and back.n_fit == model.n_fit
    for f in ("mean", "scale", "pca_mean", "components", "eigenvalues"):
        np.testing.assert_array_equal(getattr(back, f), getattr(model, f))
    assert [f.name for f in tmp_path.iterdir()] == ["pca.npz"]
    with pytest.raises(LeopartError, match="missing"):
        load_pca(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LeopartError, match="bad.npz"):
        load_pca(tmp_path / "bad.npz")


def _fit_and_write(arrays: list[np.ndarray], out) -> list[bytes]:
    mean, scale = fit_standardiser(arrays, progress=False)
    model = fit_pca(arrays, mean, scale, dim=16, progress=False)
    save_pca(out / "pca.npz", model)
    transform_to(arrays, model, [out / "a.npy", out / "b.npy"], progress=False)
    return [(out / name).read_bytes() for name in ("pca.npz", "a.npy", "b.npy")]


def test_pca_bytes_do_not_depend_on_the_blas_thread_count(tmp_path) -> None:
    """Threaded OpenBLAS sgemm/eigh round differently per thread count; the artefacts must not."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(5)
    mix = rng.standard_normal((64, 64)).astype(np.float32)
    arrays = [(rng.standard_normal((n, 8, 8, 64)).astype(np.float32) @ mix) + 1.5 for n in (48, 40)]
    results = {}
    for threads in (1, 2, 3):
        out = tmp_path / f"t{threads}"
        out.mkdir()
        with threadpool_limits(limits=threads, user_api="blas"):
            results[threads] = _fit_and_write(arrays, out)
    assert results[1] == results[2] == results[3]


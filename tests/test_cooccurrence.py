"""Tests for leopart.cd.cooccurrence (spec §8.3–8.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leopart.cd.cooccurrence import (
    OFFSET_ANGLES,
    OFFSET_DISTANCES,
    OFFSETS,
    cooccurrence,
    edge_list,
    glcm_counts,
)
from leopart.errors import LeopartError


def _random_labels(rng: np.random.Generator, shape: tuple[int, int], num_labels: int, block: int) -> np.ndarray:
    small = rng.integers(0, num_labels, size=(-(-shape[0] // block), -(-shape[1] // block)))
    return np.kron(small, np.ones((block, block), dtype=np.int64))[: shape[0], : shape[1]]


def test_offsets_follow_skimage_rule() -> None:
    expected = []
    for d in OFFSET_DISTANCES:
        for theta in OFFSET_ANGLES:
            # C round(): half away from zero
            rnd = lambda v: int(math.copysign(math.floor(abs(v) + 0.5), v))  # noqa: E731
            expected.append((rnd(math.sin(theta) * d), rnd(math.cos(theta) * d)))
    assert tuple(expected) == OFFSETS
    assert len(OFFSETS) == 16


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glcm_counts_equal_skimage(seed: int) -> None:
    skf = pytest.importorskip("skimage.feature")
    rng = np.random.default_rng(seed)
    num_labels = 6
    for shape, block in (((9, 11), 1), ((12, 10), 3), ((1, 7), 1), ((2, 2), 1)):
        img = _random_labels(rng, shape, num_labels, block).astype(np.uint8)
        ref = skf.graycomatrix(
            img,
            distances=list(OFFSET_DISTANCES),
            angles=list(OFFSET_ANGLES),
            levels=num_labels,
            symmetric=False,
            normed=False,
        ).sum(axis=(2, 3))
        got = glcm_counts(img, num_labels)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref)


def test_cooccurrence_hand_example() -> None:
    # right-neighbour offset only, 4 labels, label 3 absent
    img1 = np.array([[0, 0, 1], [0, 2, 1]])
    img2 = np.array([[1, 1, 0], [0, 2, 2]])
    a, app = cooccurrence(np.stack([img1, img2]), 4, offsets=((0, 1),))
    # img1 pairs: (0,0) (0,1) (0,2) (2,1); img2 pairs: (1,1) (1,0) (0,2) (2,2)
    # row 0: img1 [0,.5,.5,0], img2 [0,0,1,0] -> mean [0,.25,.75,0] over 2 images
    # row 1: only img2 has an off-diagonal neighbour -> [1,0,0,0]
    # row 2: only img1 -> [0,1,0,0]; row 3: never present -> NaN
    expected = np.array([[0, 0.25, 0.75, 0], [1, 0, 0, 0], [0, 1, 0, 0], [np.nan] * 4])
    np.testing.assert_allclose(a, expected)
    np.testing.assert_array_equal(app, [2, 1, 1, 0])
    assert app.dtype == np.int64 and a.dtype == np.float64


def test_cooccurrence_matches_per_image_reference_and_chunking() -> None:
    rng = np.random.default_rng(5)
    num_labels = 7
    maps = np.stack([_random_labels(rng, (12, 12), num_labels, 4) for _ in range(9)]).astype(np.int16)
    maps[3] = 2  # a uniform image: no off-diagonal pairs at all
    total = np.zeros((num_labels, num_labels))
    app = np.zeros(num_labels, dtype=np.int64)
    for img in maps:
        c = glcm_counts(img, num_labels).astype(np.float64)
        np.fill_diagonal(c, 0)
        s = c.sum(axis=1)
        total[s > 0] += c[s > 0] / s[s > 0, None]
        app += s > 0
    with np.errstate(invalid="ignore"):
        ref = total / app[:, None]
    for chunk in (1, 4, 128):
        a, got_app = cooccurrence(maps, num_labels, images_per_chunk=chunk)
        np.testing.assert_allclose(a, ref, rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(got_app, app)
    a_split, app_split = cooccurrence([maps[:5], maps[5:]], num_labels, images_per_chunk=2)
    np.testing.assert_allclose(a_split, ref, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(app_split, app)
    rows = np.isfinite(a).all(axis=1)
    np.testing.assert_allclose(a[rows].sum(axis=1), 1.0)


def test_cooccurrence_rejects_bad_labels() -> None:
    with pytest.raises(LeopartError, match="0..2"):
        cooccurrence(np.full((1, 3, 3), 3), 3)
    with pytest.raises(LeopartError, match="integers"):
        cooccurrence(np.zeros((1, 3, 3), dtype=np.float32), 3)


def test_edge_list_hand_example() -> None:
    nan = np.nan
    a = np.array(
        [
            [0.0, 0.5, 0.2, 0.0],
            [0.3, 0.0, 0.05, 0.1],  # (1,2): 0.05 < wt although A[2,1] = 0.6 -> no edge
            [0.2, 0.6, 0.0, 0.0],
            [nan, nan, nan, nan],  # absent label: NaN never passes
        ]
    )
    edges = edge_list(a, 0.1)
    assert list(edges.columns) == ["source", "target", "weight"]
    assert edges["source"].tolist() == [0, 0]
    assert edges["target"].tolist() == [1, 2]
    np.testing.assert_allclose(edges["weight"], [0.3, 0.2])
    assert edges["source"].dtype.kind == "i" and edges["weight"].dtype == np.float64
    assert len(edge_list(a, 0.31)) == 0
    assert len(edge_list(a, 0.0)) == 6 - 3  # (0,1),(0,2),(1,2); pairs with label 3 are NaN


def test_lazily_upsampled_maps_give_the_same_matrix(tmp_path) -> None:
    """UpsampledLabels (chunk-wise upsampling from a memmap) equals upsampling the whole array."""
    from leopart.cd.cooccurrence import cooccurrence
    from leopart.resample import UpsampledLabels, upsample_labels

    tok = np.random.default_rng(5).integers(0, 6, size=(37, 7, 7)).astype(np.int32)
    np.save(tmp_path / "tok.npy", tok)
    lazy = UpsampledLabels(np.load(tmp_path / "tok.npy", mmap_mode="r"), 25)
    assert lazy.shape == (37, 25, 25) and lazy.ndim == 3
    np.testing.assert_array_equal(lazy[3:9], upsample_labels(tok[3:9].astype(np.int16), 25))
    eager = upsample_labels(tok.astype(np.int16), 25)
    a_lazy, n_lazy = cooccurrence([lazy, lazy], 6, images_per_chunk=8)
    a_eager, n_eager = cooccurrence([eager, eager], 6, images_per_chunk=8)
    np.testing.assert_array_equal(a_lazy, a_eager)
    np.testing.assert_array_equal(n_lazy, n_eager)

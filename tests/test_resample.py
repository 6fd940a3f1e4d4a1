"""Tests for label-map resampling conventions (leopart.resample, spec §2.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from leopart.resample import block_counts, nearest_indices, pil_nearest_resize, upsample_labels


def _torch_indices(n_in: int, n_out: int) -> np.ndarray:
    x = torch.arange(n_in, dtype=torch.float64)[None, None, :]
    return F.interpolate(x, size=n_out, mode="nearest")[0, 0].numpy().astype(np.int64)


def test_spec_table_28_to_100():
    idx = nearest_indices(28, 100)
    assert idx[:20].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5]
    assert block_counts(28, 100).tolist() == [4, 4, 3, 4, 3, 4, 3, 4, 4, 3, 4, 3, 4, 3,
                                              4, 4, 3, 4, 3, 4, 3, 4, 4, 3, 4, 3, 4, 3]
    assert block_counts(28, 100).sum() == 100


def test_spec_table_448_to_100():
    assert nearest_indices(448, 100)[:12].tolist() == [0, 4, 8, 13, 17, 22, 26, 31, 35, 40, 44, 49]
    # nearest-exact would start 2, 6, 11 — must differ
    assert nearest_indices(448, 100)[:3].tolist() != [2, 6, 11]


PAIRS = [(28, 100), (448, 100), (100, 448), (14, 28), (6, 96), (96, 6), (7, 7), (500, 100),
         (375, 448), (37, 100), (100, 37), (1, 5), (5, 1), (224, 100)]


@pytest.mark.parametrize("n_in,n_out", PAIRS)
def test_indices_match_torch(n_in, n_out):
    assert np.array_equal(nearest_indices(n_in, n_out), _torch_indices(n_in, n_out))


@pytest.mark.parametrize("shape,size", [((28, 28), 100), ((448, 448), 100), ((30, 20), (100, 60)),
                                        ((12, 17), (5, 40))])
def test_upsample_labels_matches_interpolate(shape, size):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 256, (3, *shape)).astype(np.uint8)
    out = upsample_labels(labels, size)
    ref = F.interpolate(torch.from_numpy(labels.astype(np.float32))[:, None],
                        size=size if isinstance(size, tuple) else (size, size), mode="nearest")[:, 0]
    assert out.dtype == np.uint8
    assert np.array_equal(out, ref.numpy().astype(np.uint8))
    assert np.array_equal(upsample_labels(labels[0], size), out[0])  # (h, w) input works too


def test_pil_nearest_resize_center_sampling():
    arr = np.arange(50 * 30, dtype=np.uint8).reshape(30, 50) % 251
    out = np.asarray(pil_nearest_resize(Image.fromarray(arr), 448))
    assert out.shape == (448, 448)
    rows = np.floor((np.arange(448) + 0.5) * 30 / 448).astype(int)
    cols = np.floor((np.arange(448) + 0.5) * 50 / 448).astype(int)
    assert np.array_equal(out, arr[rows[:, None], cols[None, :]])
    assert np.asarray(pil_nearest_resize(Image.fromarray(arr), (20, 40))).shape == (20, 40)


def test_invalid_sizes():
    with pytest.raises(ValueError):
        nearest_indices(0, 10)

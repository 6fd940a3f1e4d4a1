"""Tests for mask loading and evaluation ground truth (leopart.data.masks), on the real PVOC masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from leopart.data.classes import VOC_CLASSES
from leopart.data.masks import check_image_mask_sizes, ground_truth, load_mask
from leopart.data.voc import voc_split_index
from leopart.errors import LeopartError


@pytest.fixture(scope="module")
def voc_indices(voc_masks_dir: Path):
    return {split: voc_split_index(voc_masks_dir, split, require_images=False, expected_count=n)
            for split, n in (("train", 1464), ("val", 1449))}


def test_all_real_masks_load(voc_indices):
    counts = np.zeros(256, np.int64)
    for index in voc_indices.values():
        for p in index.mask_paths:
            m = load_mask(p, len(VOC_CLASSES))
            assert m.dtype == np.uint8 and m.ndim == 2
            counts += np.bincount(m.ravel(), minlength=256)
    present = set(np.flatnonzero(counts).tolist())
    assert present == set(range(21)) | {255}  # values within range, every class occurs


def _reference(path: Path, input_size: int, eval_size: int) -> np.ndarray:
    """Independent reference: PIL NEAREST to input_size, then torch legacy nearest."""
    big = np.asarray(Image.open(path).resize((input_size, input_size), Image.NEAREST), dtype=np.uint8)
    t = torch.from_numpy(big.astype(np.float32))[None, None]
    return F.interpolate(t, size=(eval_size, eval_size), mode="nearest")[0, 0].numpy().astype(np.uint8)


@pytest.mark.parametrize("input_size,eval_size", [(448, 100), (224, 100), (448, 448), (96, 100)])
def test_ground_truth_matches_torch_reference(voc_indices, input_size, eval_size):
    paths = voc_indices["val"].mask_paths[:4] + voc_indices["train"].mask_paths[-2:]
    gt = ground_truth(paths, 21, input_size=input_size, eval_size=eval_size, progress=False)
    assert gt.shape == (len(paths), eval_size, eval_size) and gt.dtype == np.uint8
    for i, p in enumerate(paths):
        assert np.array_equal(gt[i], _reference(p, input_size, eval_size)), p


def test_palette_and_greyscale_give_same_labels(voc_indices, tmp_path):
    src = voc_indices["val"].mask_paths[0]
    assert Image.open(src).mode == "P"
    grey = tmp_path / "grey.png"
    Image.fromarray(np.asarray(Image.open(src))).save(grey)
    assert Image.open(grey).mode == "L"
    assert np.array_equal(load_mask(src, 21), load_mask(grey, 21))
    assert np.array_equal(ground_truth([src], 21, progress=False), ground_truth([grey], 21, progress=False))


def test_out_of_range_label_rejected(tmp_path):
    m = np.zeros((10, 12), np.uint8)
    m[2, 3] = 37
    m[4, 4] = 255
    m[5, 5] = 21
    bad = tmp_path / "bad_mask.png"
    Image.fromarray(m).save(bad)
    with pytest.raises(LeopartError, match=r"bad_mask\.png.*21, 37") as exc:
        load_mask(bad, 21)
    assert "\n" not in str(exc.value)
    with pytest.raises(LeopartError, match=r"bad_mask\.png"):
        ground_truth([bad], 21, progress=False)
    assert load_mask(bad, 40)[2, 3] == 37


def test_corrupt_missing_and_rgb_masks_rejected(tmp_path, voc_indices):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(LeopartError, match=r"corrupt\.png: cannot read mask"):
        load_mask(corrupt, 21)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(voc_indices["val"].mask_paths[0].read_bytes()[:300])
    with pytest.raises(LeopartError, match=r"truncated\.png"):
        load_mask(truncated, 21)
    with pytest.raises(LeopartError, match=r"nothere\.png: mask file is missing"):
        load_mask(tmp_path / "nothere.png", 21)
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (8, 8)).save(rgb)
    with pytest.raises(LeopartError, match=r"rgb\.png.*mode 'RGB'"):
        load_mask(rgb, 21)


def test_check_image_mask_sizes(tmp_path):
    img, mask, other = tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (20, 10)).save(img)
    Image.new("L", (20, 10)).save(mask)
    Image.new("L", (10, 20)).save(other)
    assert check_image_mask_sizes(img, mask) == (20, 10)
    with pytest.raises(LeopartError, match=r"b\.png.*a\.jpg"):
        check_image_mask_sizes(img, other)
    with pytest.raises(LeopartError, match=r"missing"):
        check_image_mask_sizes(tmp_path / "x.jpg", mask)

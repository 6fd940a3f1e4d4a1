"""Tests for the synthetic toy dataset (leopart.data.toy)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from leopart.data import toy
from leopart.data.classes import TOY_CLASSES
from leopart.data.masks import load_mask
from leopart.errors import LeopartError

S = 128


@pytest.fixture(scope="module")
def sample() -> list[tuple[np.ndarray, np.ndarray]]:
    """100 rendered train images at 128²."""
    return [toy.render_toy_image(toy.image_rng(0, "train", i), S) for i in range(100)]


def test_render_shapes_and_dtypes(sample):
    for image, mask in sample[:10]:
        assert image.shape == (S, S, 3) and image.dtype == np.uint8
        assert mask.shape == (S, S) and mask.dtype == np.uint8


def test_render_is_deterministic():
    a = toy.render_toy_image(toy.image_rng(7, "train", 3), S)
    b = toy.render_toy_image(toy.image_rng(7, "train", 3), S)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_splits_and_seeds_differ():
    train = toy.render_toy_image(toy.image_rng(0, "train", 0), S)[0]
    val = toy.render_toy_image(toy.image_rng(0, "val", 0), S)[0]
    other_seed = toy.render_toy_image(toy.image_rng(1, "train", 0), S)[0]
    assert not np.array_equal(train, val)
    assert not np.array_equal(train, other_seed)


def test_mask_values_and_all_classes_occur(sample):
    counts = np.zeros(256, np.int64)
    for _, mask in sample:
        counts += np.bincount(mask.ravel(), minlength=256)
    present = set(np.flatnonzero(counts).tolist())
    assert present <= set(range(len(TOY_CLASSES))) | {255}
    assert present >= set(range(len(TOY_CLASSES))) | {255}  # every class (and the band) occurs


def test_foreground_fraction(sample):
    fg = [((m > 0) & (m != 255)).sum() / (m != 255).sum() for _, m in sample]
    assert 0.2 <= float(np.mean(fg)) <= 0.4


def test_objects_are_not_centred_by_construction(sample):
    """Objects reach the image border in many images and the mean mask is nearly flat: a centre
    prior must not already know where the objects are (design version 3)."""
    fg = np.stack([(m > 0) & (m != 255) for _, m in sample]).astype(np.float64)
    touches = fg[:, 0].any(1) | fg[:, -1].any(1) | fg[:, :, 0].any(1) | fg[:, :, -1].any(1)
    assert touches.mean() > 0.5
    mean = fg.mean(0)
    centre = mean[S // 4: 3 * S // 4, S // 4: 3 * S // 4].mean()
    ring = (mean.sum() - centre * (S // 2) ** 2) / (S * S - (S // 2) ** 2)
    assert centre < 2.0 * ring


def test_object_brightness_varies_per_object():
    """The snowman's flat white discs take the object's brightness factor ×[0.6, 1.4] (clipped at
    white): across instances their colour spans a wide range, as under different lighting."""
    rng = np.random.default_rng(0)
    levels = []
    for _ in range(40):
        img = np.zeros((S, S, 3), np.float32)
        lab = np.zeros((S, S), np.uint8)
        toy._draw_object(img, lab, toy.TOY_CLASSES.index("snowman"), rng)
        disc = img[lab == toy.TOY_CLASSES.index("snowman")].min(axis=1)  # white discs: min channel high
        levels.append(np.median(disc))
    levels = np.asarray(levels)
    assert levels.min() < 0.7 and levels.max() > 0.9


def test_hue_rotation_known_answers():
    """Rotation about the grey axis: greys fixed, RGB mean kept, 120° cycles R→G→B, ±θ inverse."""
    grey = np.array([0.3, 0.3, 0.3])
    np.testing.assert_allclose(toy.hue_rotation(73.0) @ grey, grey, atol=1e-12)
    c = np.array([0.9, 0.4, 0.1])
    assert np.isclose((toy.hue_rotation(-41.0) @ c).mean(), c.mean())
    np.testing.assert_allclose(toy.hue_rotation(120.0) @ c, [0.1, 0.9, 0.4], atol=1e-12)
    np.testing.assert_allclose(toy.hue_rotation(30.0) @ toy.hue_rotation(-30.0), np.eye(3), atol=1e-12)
    r = toy.hue_rotation(25.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_object_hue_varies_per_object():
    """Design v4: an object's chromatic parts take one hue rotation in ±HUE_ROTATION_DEG, so the
    fish's orange body is orange, yellow-green or magenta across instances (its black eye stays
    black): colour alone no longer names the class."""
    rng = np.random.default_rng(1)
    fish = toy.TOY_CLASSES.index("fish")
    angles = []
    for _ in range(40):
        img = np.zeros((S, S, 3), np.float32)
        lab = np.zeros((S, S), np.uint8)
        toy._draw_object(img, lab, fish, rng)
        px = img[lab == fish]
        px = px[px.max(1) - px.min(1) > 0.3]             # saturated pixels: body/tail, not eye/bands
        if len(px) < 20:
            continue
        mean = np.median(px, axis=0)
        x = mean[0] - 0.5 * (mean[1] + mean[2])          # hue angle in the plane orthogonal to grey
        y = np.sqrt(3) / 2 * (mean[1] - mean[2])
        angles.append(np.degrees(np.arctan2(y, x)))
    angles = np.asarray(angles)
    assert len(angles) > 20
    assert angles.max() - angles.min() > 100.0


def test_boundary_band_separates_all_labels(sample):
    """No two 4-adjacent pixels carry different non-ignore labels; every image with an object has a band."""
    for _, m in sample:
        for a, b in ((m[1:], m[:-1]), (m[:, 1:], m[:, :-1])):
            diff = (a != b) & (a != 255) & (b != 255)
            assert not diff.any()
        if ((m > 0) & (m != 255)).any():
            assert (m == 255).any()
    # the band is thin: about 1 px on each side of boundaries at 128²
    band = np.mean([(m == 255).mean() for _, m in sample])
    assert 0.01 < band < 0.15


def test_boundary_width_scales():
    assert toy.boundary_width(64) == 1 and toy.boundary_width(128) == 1
    assert toy.boundary_width(448) == 4
    m = np.zeros((20, 20), np.uint8)
    m[:, 10:] = 3
    out = toy.add_boundary_band(m, 2)
    assert (out[:, 8:12] == 255).all() and (out[:, :8] == 0).all() and (out[:, 12:] == 3).all()


def test_bad_arguments(tmp_path):
    with pytest.raises(LeopartError, match="n_train"):
        toy.generate_toy(tmp_path / "t", 0, 2, progress=False)
    with pytest.raises(LeopartError, match="image_size"):
        toy.render_toy_image(np.random.default_rng(0), 8)
    with pytest.raises(LeopartError, match="split"):
        toy.image_rng(0, "test", 0)


def test_generate_layout_roundtrip_and_determinism(tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    toy.generate_toy(out_a, 4, 3, image_size=64, seed=5, progress=False)
    toy.generate_toy(out_b, 4, 3, image_size=64, seed=5, progress=False)
    files_a = sorted(p.relative_to(out_a) for p in out_a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(out_b) for p in out_b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2 * 7 + 4
    for rel in files_a:
        assert (out_a / rel).read_bytes() == (out_b / rel).read_bytes(), rel
    assert json.loads((out_a / "classes.json").read_text()) == TOY_CLASSES
    design = json.loads((out_a / "design.json").read_text())
    assert design["design_version"] == toy.DESIGN_VERSION and design["seed"] == 5
    assert design["counts"] == {"train": 4, "val": 3} and design["brightness_range"] == list(toy.BRIGHTNESS_RANGE)
    assert design["design_version"] == 4 and design["hue_rotation_deg"] == toy.HUE_ROTATION_DEG
    assert (out_a / "sets" / "val.txt").read_text().split() == ["val_00000", "val_00001", "val_00002"]

    for split, n in (("train", 4), ("val", 3)):
        index = toy.toy_split_index(out_a, split)
        assert len(index) == n and index.class_names == TOY_CLASSES
        for i, (name, img_p, mask_p) in enumerate(zip(index.names, index.image_paths, index.mask_paths)):
            image, mask = toy.render_toy_image(toy.image_rng(5, split, i), 64)
            assert name == toy.toy_name(split, i)
            assert Image.open(mask_p).mode == "L"
            assert np.array_equal(load_mask(mask_p, len(TOY_CLASSES)), mask)
            assert np.array_equal(np.asarray(Image.open(img_p).convert("RGB")), image)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_generate_is_atomic_and_replaces(tmp_path, monkeypatch):
    out = tmp_path / "toy"
    toy.generate_toy(out, 2, 1, image_size=32, progress=False)
    calls = {"n": 0}
    real = toy.render_toy_image

    def failing(rng: np.random.Generator, size: int):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("interrupted")
        return real(rng, size)

    monkeypatch.setattr(toy, "render_toy_image", failing)
    with pytest.raises(RuntimeError):
        toy.generate_toy(out, 5, 5, image_size=32, progress=False)
    # the previous complete dataset is untouched, no partial folder left behind
    assert len(toy.toy_split_index(out, "train")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    monkeypatch.setattr(toy, "render_toy_image", real)
    toy.generate_toy(out, 3, 2, image_size=32, progress=False)
    assert len(toy.toy_split_index(out, "train")) == 3


def test_toy_split_index_errors(tmp_path):
    with pytest.raises(LeopartError, match="no toy dataset"):
        toy.toy_split_index(tmp_path, "train")
    out = tmp_path / "toy"
    toy.generate_toy(out, 2, 1, image_size=32, progress=False)
    (out / "masks" / "train_00001.png").unlink()
    with pytest.raises(LeopartError, match=r"train_00001\.png.*train\.txt"):
        toy.toy_split_index(out, "train")
    with pytest.raises(LeopartError, match="test.txt"):
        toy.toy_split_index(out, "test")


def test_render_speed():
    """Rendering is vectorised: 50 images at 128² take well under a second each."""
    t0 = time.perf_counter()
    for i in range(50):
        toy.render_toy_image(toy.image_rng(3, "val", i), S)
    assert time.perf_counter() - t0 < 10.0

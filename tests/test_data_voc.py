"""Tests for PVOC layout discovery, split indices, manifests and the evaluation image dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leopart.data.classes import VOC_CLASSES
from leopart.data.dataset import SplitIndex, read_manifest, write_manifest
from leopart.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageDataset, ImageFolderDataset
from leopart.data.voc import find_voc_root, voc_split_index
from leopart.errors import LeopartError
from leopart.io import sidecar_path

TRAIN = ["2008_000003", "2007_000032", "2009_000010"]  # deliberately not sorted: order is kept
VAL = ["2007_000033", "2010_000001"]


def _write_pair(img_dir: Path | None, mask_dir: Path, name: str, value: int, rng: np.random.Generator) -> None:
    mask_dir.mkdir(parents=True, exist_ok=True)
    m = np.zeros((12, 16), np.uint8)
    m[3:9, 4:12] = value
    m[2, :] = 255
    Image.fromarray(m).save(mask_dir / f"{name}.png")
    if img_dir is not None:
        img_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(img_dir / f"{name}.jpg")


def make_authors_layout(root: Path, images: bool = True) -> Path:
    """<root>/VOCSegmentation with sets, images, SegmentationClass (value 1), SegmentationClassAug (value 2)."""
    rng = np.random.default_rng(0)
    voc = root / "VOCSegmentation"
    (voc / "sets").mkdir(parents=True)
    (voc / "sets" / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (voc / "sets" / "val.txt").write_text("\n".join(VAL) + "\n\n")
    for n in TRAIN:
        _write_pair(voc / "images" if images else None, voc / "SegmentationClassAug", n, 2, rng)
        _write_pair(None, voc / "SegmentationClass", n, 1, rng)
    for n in VAL:
        _write_pair(voc / "images" if images else None, voc / "SegmentationClass", n, 1, rng)
    return root


def make_official_layout(root: Path, images: bool = True) -> Path:
    rng = np.random.default_rng(1)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VAL) + "\n")
    for n in TRAIN + VAL:
        _write_pair(root / "JPEGImages" if images else None, root / "SegmentationClass", n, 1, rng)
    return root


# --------------------------------------------------------------------------------------- layouts

def test_find_voc_root_layouts(tmp_path):
    a = make_authors_layout(tmp_path / "a")
    assert find_voc_root(a) == ("authors", a / "VOCSegmentation")
    assert find_voc_root(a / "VOCSegmentation") == ("authors", a / "VOCSegmentation")
    o = make_official_layout(tmp_path / "o" / "VOCdevkit" / "VOC2012")
    assert find_voc_root(tmp_path / "o") == ("official", o)
    assert find_voc_root(o) == ("official", o)
    m = make_official_layout(tmp_path / "m", images=False)
    assert find_voc_root(m) == ("official", m)


def test_find_voc_root_missing(tmp_path):
    with pytest.raises(LeopartError) as exc:
        find_voc_root(tmp_path)
    assert str(exc.value) == f"{tmp_path}: no PVOC dataset found (expected VOCSegmentation/ or VOCdevkit/VOC2012/)"


@pytest.mark.parametrize(("make", "remove", "message"), [
    ("official", ["SegmentationClass"], "VOCdevkit/VOC2012: found, but SegmentationClass/ is missing"),
    ("official", ["ImageSets"], "VOCdevkit/VOC2012: found, but ImageSets/Segmentation/ is missing"),
    ("official", ["ImageSets", "SegmentationClass"],
     "VOCdevkit/VOC2012: found, but ImageSets/Segmentation/ and SegmentationClass/ are missing"),
    ("official", ["ImageSets", "SegmentationClass", "JPEGImages", "."], "VOCdevkit: found, but VOC2012/ is missing"),
    ("authors", ["sets"], "VOCSegmentation: found, but sets/ is missing"),
    ("authors", ["SegmentationClass", "SegmentationClassAug"],
     "VOCSegmentation: found, but SegmentationClass/ (or SegmentationClassAug/) is missing"),
])
def test_find_voc_root_names_the_missing_piece(tmp_path, make, remove, message):
    """A layout folder that exists but lacks a sub-folder: the message says which (not 'no dataset')."""
    import shutil

    if make == "official":
        root = make_official_layout(tmp_path / "VOCdevkit" / "VOC2012")
    else:
        root = make_authors_layout(tmp_path) / "VOCSegmentation"
    for name in remove:
        shutil.rmtree(root / name)
    with pytest.raises(LeopartError) as exc:
        find_voc_root(tmp_path)
    assert str(exc.value) == f"{tmp_path}/{message}"
    with pytest.raises(LeopartError, match="dataset folder is missing"):
        find_voc_root(tmp_path / "nope")


def test_images_found_by_stem_with_any_extension_and_any_class_count(tmp_path, monkeypatch):
    """.JPG / .png / .tiff images are found by stem (case-insensitive) in one directory listing;
    any number of names; class names follow num_classes or dataset.class_names."""
    import os

    root = make_official_layout(tmp_path, images=False)
    img = root / "JPEGImages"
    img.mkdir()
    rng = np.random.default_rng(3)
    for name, ext in zip(TRAIN, (".JPG", ".png", ".tiff"), strict=True):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(img / f"{name}{ext}")
    (img / f"{TRAIN[0]}.txt").write_text("not an image")  # ignored: not an image extension
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda d: listed.append(Path(d)) or real_listdir(d))
    index = voc_split_index(root, "train", num_classes=11)
    assert listed.count(img) == 1
    assert [p.name for p in index.image_paths] == [f"{TRAIN[0]}.JPG", f"{TRAIN[1]}.png", f"{TRAIN[2]}.tiff"]
    assert index.class_names == ["background"] + [f"class {i}" for i in range(1, 11)]
    assert voc_split_index(root, "train").class_names == VOC_CLASSES  # 21 classes: VOC's names
    names = ["background", "road", "car"]
    assert voc_split_index(root, "train", num_classes=3, class_names=names).class_names == names
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(img / f"{TRAIN[0]}.png")
    with pytest.raises(LeopartError, match=rf"several images named '{TRAIN[0]}'"):
        voc_split_index(root, "train")


def test_authors_layout_splits(tmp_path):
    root = make_authors_layout(tmp_path)
    voc = root / "VOCSegmentation"
    train = voc_split_index(root, "train", expected_count=3)
    assert train.names == TRAIN and len(train) == 3
    assert train.mask_paths == [voc / "SegmentationClassAug" / f"{n}.png" for n in TRAIN]
    assert train.image_paths == [voc / "images" / f"{n}.jpg" for n in TRAIN]
    assert train.class_names == VOC_CLASSES
    official_train = voc_split_index(root, "train", train_masks="SegmentationClass")
    assert official_train.mask_paths == [voc / "SegmentationClass" / f"{n}.png" for n in TRAIN]
    val = voc_split_index(root, "val", expected_count=2)
    assert val.names == VAL
    assert val.mask_paths == [voc / "SegmentationClass" / f"{n}.png" for n in VAL]
    with pytest.raises(LeopartError, match="train_masks"):
        voc_split_index(root, "train", train_masks="Foo")


def test_official_layout_splits(tmp_path):
    o = make_official_layout(tmp_path / "VOCdevkit" / "VOC2012")
    train = voc_split_index(tmp_path, "train")
    assert train.mask_paths == [o / "SegmentationClass" / f"{n}.png" for n in TRAIN]
    assert train.image_paths == [o / "JPEGImages" / f"{n}.jpg" for n in TRAIN]


def test_missing_files_and_counts(tmp_path):
    root = make_authors_layout(tmp_path)
    voc = root / "VOCSegmentation"
    (voc / "images" / f"{TRAIN[1]}.jpg").unlink()
    with pytest.raises(LeopartError, match=rf"{TRAIN[1]}\.\*: image listed in .*sets/train\.txt is missing"):
        voc_split_index(root, "train")
    # mask-only use does not need the images; an incomplete image set gives a mask-only index
    assert voc_split_index(root, "train", require_images=False).image_paths is None
    assert voc_split_index(root, "val", require_images=False).image_paths is not None
    (voc / "SegmentationClass" / f"{VAL[0]}.png").unlink()
    with pytest.raises(LeopartError, match=rf"SegmentationClass/{VAL[0]}\.png: mask listed in .*val\.txt"):
        voc_split_index(root, "val", require_images=False)
    with pytest.raises(LeopartError, match=r"train\.txt: split 'train' lists 3 names, expected 1464"):
        voc_split_index(root, "train", require_images=False, expected_count=1464)
    with pytest.raises(LeopartError, match=r"trainaug\.txt: split list is missing"):
        voc_split_index(root, "trainaug")
    (voc / "sets" / "dup.txt").write_text(f"{VAL[1]}\n{VAL[1]}\n")
    with pytest.raises(LeopartError, match="more than once"):
        voc_split_index(root, "dup", require_images=False)


def test_real_mask_folder(voc_masks_dir):
    layout, root = find_voc_root(voc_masks_dir)
    assert layout == "official" and root == voc_masks_dir
    val = voc_split_index(voc_masks_dir, "val", require_images=False, expected_count=1449)
    assert val.image_paths is None and val.names[0] == "2007_000033"
    train = voc_split_index(voc_masks_dir, "train", require_images=False, expected_count=1464)
    assert not set(train.names) & set(val.names)
    with pytest.raises(LeopartError, match=r"JPEGImages/2007_000033\.\*: image listed in .*val\.txt is missing"):
        voc_split_index(voc_masks_dir, "val")


# ------------------------------------------------------------------------------------- manifests

def test_manifest_roundtrip(tmp_path):
    index = voc_split_index(make_authors_layout(tmp_path / "d"), "train")
    path = tmp_path / "out" / "train.parquet"
    write_manifest(path, index)
    back = read_manifest(path)
    assert back == index
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["class_names"] == VOC_CLASSES and meta["count"] == 3 and meta["has_images"] is True
    import pandas as pd
    table = pd.read_parquet(path)
    assert list(table.columns) == ["name", "image", "mask"]

    mask_only = SplitIndex(names=index.names, image_paths=None, mask_paths=index.mask_paths,
                           class_names=["bg", "x"])
    write_manifest(path, mask_only)
    back = read_manifest(path)
    assert back.image_paths is None and back == mask_only and back.num_classes == 2


def test_manifest_errors(tmp_path):
    with pytest.raises(LeopartError, match=r"nope\.parquet: dataset manifest is missing"):
        read_manifest(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(LeopartError, match=r"bad\.parquet: cannot read dataset manifest"):
        read_manifest(bad)
    good = tmp_path / "good.parquet"
    write_manifest(good, SplitIndex(["a"], None, [Path("a.png")], ["bg"]))
    sidecar_path(good).unlink()
    with pytest.raises(LeopartError, match=r"good\.json"):
        read_manifest(good)
    with pytest.raises(ValueError):
        SplitIndex(["a", "b"], None, [Path("a.png")], ["bg"])


# ---------------------------------------------------------------------------------------- images

def test_image_dataset(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    p_rgb, p_grey, p_rgba = tmp_path / "a.png", tmp_path / "g.png", tmp_path / "r.png"
    Image.fromarray(arr).save(p_rgb)
    Image.fromarray(arr[..., 0]).save(p_grey)
    Image.fromarray(np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])).save(p_rgba)
    ds = ImageDataset([p_rgb, p_grey, str(p_rgba)], 32)
    assert len(ds) == 3 and ImageFolderDataset is ImageDataset
    x = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    ref = np.asarray(Image.fromarray(arr).resize((32, 32), Image.BILINEAR), np.float32) / 255.0
    ref = (ref - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    assert np.allclose(x.numpy(), ref.transpose(2, 0, 1), atol=1e-5)
    assert ds[1].shape == (3, 32, 32)
    assert torch.allclose(ds[2], x)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch.shape == (3, 3, 32, 32)


def test_image_dataset_errors(tmp_path):
    corrupt = tmp_path / "c.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"junk" * 10)
    ds = ImageDataset([corrupt, tmp_path / "missing.jpg"], 16)
    with pytest.raises(LeopartError, match=r"c\.jpg: cannot read image"):
        ds[0]
    with pytest.raises(LeopartError, match=r"missing\.jpg: image file is missing"):
        ds[1]


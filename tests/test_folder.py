"""dataset.kind folder (leopart.data.folder): index, splits, label remapping, one-line bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leopart.config import check_labels_config
from leopart.data.dataset import read_manifest
from leopart.data.folder import folder_split_index, internal_class_names, random_split, remap_mask
from leopart.data.images import load_rgb
from leopart.data.masks import ground_truth, load_mask
from leopart.errors import LeopartError
from leopart.stages import data as data_stage
from leopart.stages.runner import StageCall


def _image(path: Path, mode: str = "RGB", size: tuple[int, int] = (8, 6), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, format=fmt)
    return path


def _mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def _folder(tmp: Path, masks: bool = True) -> dict:
    """Images a (png, RGB), b (jpg, L), c (tif, CMYK), d (bmp, P), all 8x6; masks of the same size."""
    _image(tmp / "img" / "a.png")
    _image(tmp / "img" / "b.jpg", "L")
    _image(tmp / "img" / "c.tif", "CMYK")
    _image(tmp / "img" / "d.bmp", "P")
    (tmp / "img" / "notes.txt").write_text("not an image")
    if masks:
        for stem in "abcd":
            _mask(tmp / "msk" / f"{stem}.png", np.full((6, 8), 1))
    return {"images": str(tmp / "img"), "masks": str(tmp / "msk") if masks else None, "splits": None,
            "val_fraction": 0.25, "seed": 0}


def test_index_every_pil_format_sorted_by_stem_with_a_recorded_seeded_split(tmp_path: Path) -> None:
    section = _folder(tmp_path)
    train, rec = folder_split_index(section, "train", 3)
    val, rec_val = folder_split_index(section, "val", 3)
    assert rec == rec_val == {"source": "random", "seed": 0, "val_fraction": 0.25, "train": 3, "val": 1}
    assert sorted(train.names + val.names) == ["a", "b", "c", "d"] and len(val) == 1
    assert train.names == sorted(train.names)  # sorted-stem order within a split
    assert [p.name for p in train.image_paths] == [f"{n}.{dict(a='png', b='jpg', c='tif', d='bmp')[n]}"
                                                   for n in train.names]
    assert [p.name for p in train.mask_paths] == [f"{n}.png" for n in train.names]
    assert train.class_names == ["background", "class 1", "class 2"]
    # grayscale, CMYK and palette images are read as RGB
    for path in train.image_paths + val.image_paths:
        assert load_rgb(path).mode == "RGB"
    # same seed -> same split; another seed may differ but is again complete
    assert folder_split_index(section, "val", 3)[0].names == val.names
    parts = random_split(list("abcdefghij"), 0.3, 1)
    assert len(parts["val"]) == 3 and sorted(parts["train"] + parts["val"]) == list("abcdefghij")


def test_split_lists_and_no_masks(tmp_path: Path) -> None:
    section = _folder(tmp_path, masks=False)
    (tmp_path / "train.txt").write_text("d\nb\n")
    (tmp_path / "val.txt").write_text("a\n")
    section["splits"] = {"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")}
    index, rec = folder_split_index(section, "train", 2)
    assert index.names == ["d", "b"] and index.mask_paths is None and not index.has_masks
    assert rec == {"source": str(tmp_path / "train.txt")}
    (tmp_path / "val.txt").write_text("zzz\n")
    with pytest.raises(LeopartError, match=r"val\.txt: lists 'zzz', which has no image"):
        folder_split_index(section, "val", 2)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("case", ["no_images", "mask_without_image", "image_without_mask", "two_images_one_stem"])
def test_bad_folders_stop_with_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    section = _folder(tmp_path)
    if case == "no_images":
        section["images"] = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "readme.txt").write_text("x")
        expected = f"{tmp_path / 'empty'}: image folder holds no image file"
    elif case == "mask_without_image":
        _mask(tmp_path / "msk" / "e.png", np.zeros((6, 8)))
        expected = f"{tmp_path / 'msk' / 'e.png'}: mask without an image"
    elif case == "image_without_mask":
        (tmp_path / "msk" / "b.png").unlink()
        expected = f"{tmp_path / 'img' / 'b.jpg'}: image without a mask"
    else:
        _image(tmp_path / "img" / "a.jpg")
        expected = f"{tmp_path / 'img' / 'a.png'}: another image has the stem 'a'"
    with pytest.raises(LeopartError) as exc:
        folder_split_index(section, "train", 3)
    assert _one_line(exc).startswith(expected)


def _manifest_call(tmp_path: Path, section: dict, split: str = "train") -> StageCall:
    return StageCall(input={"dataset": section["images"]},
                     output={"manifest": str(tmp_path / "out" / f"{split}.parquet")},
                     params={"kind": "folder", "folder": section, "num_classes": 3, "class_names": None,
                             "background_class": 0, "train_masks": None, "voc2012": None, "require_images": True},
                     wildcards={"split": split})


def test_manifest_stage_checks_sizes_and_readability(tmp_path: Path) -> None:
    section = _folder(tmp_path)
    data_stage.manifest(_manifest_call(tmp_path, section))
    meta = json.loads((tmp_path / "out" / "train.json").read_text())
    assert meta["split"]["source"] == "random" and meta["has_masks"] is True
    # a mask of another size
    _mask(tmp_path / "msk" / "a.png", np.zeros((5, 8)))
    with pytest.raises(LeopartError) as exc:
        data_stage.manifest(_manifest_call(tmp_path, section, "val" if "a" in folder_split_index(
            section, "val", 3)[0].names else "train"))
    assert _one_line(exc).startswith(f"{tmp_path / 'msk' / 'a.png'}: mask size 8x5 differs from image")
    # an unreadable image, without masks
    nomask = _folder(tmp_path / "n", masks=False)
    (tmp_path / "n" / "img" / "a.png").write_bytes(b"not a png")
    with pytest.raises(LeopartError) as exc:
        for split in ("train", "val"):
            data_stage.manifest(_manifest_call(tmp_path / "n", nomask, split))
    assert _one_line(exc).startswith(f"{tmp_path / 'n' / 'img' / 'a.png'}: cannot read image")


def test_ground_truth_without_masks_is_all_ignore(tmp_path: Path) -> None:
    section = _folder(tmp_path, masks=False)
    data_stage.manifest(_manifest_call(tmp_path, section))
    index = read_manifest(tmp_path / "out" / "train.parquet")
    assert index.mask_paths is None and index.image_paths is not None and len(index) == 3
    call = StageCall(input={"manifest": str(tmp_path / "out" / "train.parquet")},
                     output={"gt": str(tmp_path / "out" / "gt.npy")},
                     params={"num_classes": 3, "input_size": 8, "eval_size": 4}, wildcards={"split": "train"})
    data_stage.ground_truth(call)
    gt = np.load(tmp_path / "out" / "gt.npy")
    assert gt.shape == (3, 4, 4) and (gt == 255).all()


def test_background_class_and_ignore_index_are_remapped(tmp_path: Path) -> None:
    # road-scene style: label 0 = sky (a class), 2 = road (background), 99 = unlabelled
    arr = np.array([[0, 1, 2, 99]], dtype=np.uint8)
    out = remap_mask(arr, background_class=2, ignore_index=99)
    assert out.tolist() == [[2, 1, 0, 255]] and arr.tolist() == [[0, 1, 2, 99]]
    assert remap_mask(arr, 0, 255) is arr
    path = _mask(tmp_path / "m.png", np.tile(arr, (4, 1)))
    assert load_mask(path, 3, background_class=2, ignore_index=99)[0].tolist() == [2, 1, 0, 255]
    gt = ground_truth([path], 3, input_size=4, eval_size=4, progress=False, background_class=2, ignore_index=99)
    assert gt[0, 0].tolist() == [2, 1, 0, 255]
    assert internal_class_names(3, ["sky", "car", "road"], 2) == ["road", "car", "sky"]
    assert internal_class_names(3, None, 2) == ["background", "class 1", "class 0"]
    # labels outside num_classes (99 is not the ignore label here): one line naming the file
    with pytest.raises(LeopartError) as exc:
        load_mask(path, 3)
    assert _one_line(exc).startswith(f"{path}: mask has label value(s) 99 outside 0..2 and 255")


def test_label_config_without_background_stops_with_an_explanation() -> None:
    with pytest.raises(LeopartError) as exc:
        check_labels_config({"num_classes": 4, "background_class": None, "ignore_index": 255})
    assert "need a background class" in _one_line(exc)
    with pytest.raises(LeopartError, match="background_class = 4 is not a label in 0..3"):
        check_labels_config({"num_classes": 4, "background_class": 4, "ignore_index": 255})
    with pytest.raises(LeopartError, match="ignore_index = 2 is a class label"):
        check_labels_config({"num_classes": 4, "background_class": 0, "ignore_index": 2})
    check_labels_config({"num_classes": 4, "background_class": 3, "ignore_index": 4})

"""Multi-crop augmentation and crop-box frames (spec §3.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from leopart.errors import LeopartError
from leopart.train.multicrop import (
    ColourAug,
    CropDataset,
    LeopartCrops,
    boxes_to_original,
    collate_crops,
    color_jitter,
    forward_by_resolution,
    random_resized_crop_params,
    relative_boxes,
    to_normalized_tensor,
)


def _image(w: int = 80, h: int = 60, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


NO_COLOUR = ColourAug(jitter_p=0.0, gray_p=0.0, blur_p=0.0)


def test_rrc_params_match_torchvision() -> None:
    img = _image(97, 61)
    for seed in range(20):
        torch.manual_seed(seed)
        ref = T.RandomResizedCrop.get_params(img, [0.05, 0.25], [3 / 4, 4 / 3])
        g = torch.Generator().manual_seed(seed)
        assert random_resized_crop_params(97, 61, (0.05, 0.25), (3 / 4, 4 / 3), g) == tuple(ref)


def test_color_jitter_matches_torchvision() -> None:
    img = _image(16, 16)
    torch.manual_seed(3)
    ref = np.asarray(T.ColorJitter(0.8, 0.8, 0.8, 0.2)(img))
    out = np.asarray(color_jitter(img, torch.Generator().manual_seed(3), 0.8, 0.8, 0.8, 0.2))
    np.testing.assert_array_equal(out, ref)


def test_own_box_maps_to_full_crop() -> None:
    boxes = torch.tensor([[0, 0, 80, 60], [10, 5, 70, 50], [20, 10, 40, 30], [0, 30, 30, 60]], dtype=torch.float32)
    sizes = [64, 64, 32, 32]
    gc, all_ = relative_boxes(boxes, sizes, n_global=2)
    assert gc.shape == (2, 4, 4) and all_.shape == (4, 2, 4)
    for g in range(2):
        torch.testing.assert_close(gc[g, g], torch.tensor([0.0, 0.0, 64.0, 64.0]))
        torch.testing.assert_close(all_[g, g], torch.tensor([0.0, 0.0, 64.0, 64.0]))
    # crop 2 lies inside both global crops: in its own frame the intersection is the whole crop
    torch.testing.assert_close(all_[2, 0], torch.tensor([0.0, 0.0, 32.0, 32.0]))
    torch.testing.assert_close(all_[2, 1], torch.tensor([0.0, 0.0, 32.0, 32.0]))
    # crop 2 in global crop 0's frame (80x60 -> 64x64): x*64/80, y*64/60
    torch.testing.assert_close(gc[0, 2], torch.tensor([16.0, 64 / 6, 32.0, 32.0]))


def test_overlaps_agree_in_both_frames() -> None:
    crops = LeopartCrops(global_size=64, local_size=32, colour=NO_COLOUR)
    for seed in range(10):
        out = crops(_image(90, 70, seed), torch.Generator().manual_seed(seed))
        boxes, gc, all_ = out["boxes"], out["gc"], out["all"]
        sizes = crops.crop_sizes
        for g in range(2):
            for v in range(6):
                lt = torch.maximum(boxes[g, :2], boxes[v, :2])
                rb = torch.minimum(boxes[g, 2:], boxes[v, 2:])
                inter = torch.cat([lt, rb]).double()
                from_g = boxes_to_original(gc[g, v], boxes[g], sizes[g])
                from_v = boxes_to_original(all_[v, g], boxes[v], sizes[v])
                torch.testing.assert_close(from_g, inter, atol=1e-4, rtol=0)
                torch.testing.assert_close(from_v, inter, atol=1e-4, rtol=0)


def test_crops_respect_overlap_and_are_unflipped() -> None:
    img = _image(80, 60)
    crops = LeopartCrops(global_size=64, local_size=32, colour=NO_COLOUR)
    out = crops(img, torch.Generator().manual_seed(1))
    boxes = out["boxes"].long().tolist()
    thr = int(80 * 60 * 0.01)

    def area(a: list[int], b: list[int]) -> int:
        return max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)

    assert area(boxes[1], boxes[0]) > 2 * thr
    for v in range(2, 6):
        assert area(boxes[v], boxes[0]) > thr and area(boxes[v], boxes[1]) > thr
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        assert 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 60
        size = crops.crop_sizes[i]
        ref = to_normalized_tensor(TF.resized_crop(img, y1, x1, y2 - y1, x2 - x1, [size, size]))
        torch.testing.assert_close(out["crops"][i], ref)
    # same generator seed -> same crops and colour augmentation
    full = LeopartCrops(global_size=64, local_size=32)
    a = full(img, torch.Generator().manual_seed(5))
    b = full(img, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a["crops"], b["crops"]))


def test_impossible_overlap_raises_after_max_tries() -> None:
    crops = LeopartCrops(global_size=32, local_size=16, min_intersection=0.9, max_tries=20, colour=NO_COLOUR)
    with pytest.raises(LeopartError, match=r"min_intersection=0\.9.*50x40.*20 tries"):
        crops(_image(50, 40), torch.Generator().manual_seed(0))


def test_collate_and_dataset_determinism() -> None:
    imgs = [_image(48, 40, s) for s in range(3)]
    crops = LeopartCrops(global_size=32, local_size=16)
    ds = CropDataset(imgs, crops, seed=7)
    batch = collate_crops([ds[0], ds[1], ds[2]])
    assert [tuple(c.shape) for c in batch["crops"]] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 4
    assert batch["gc"].shape == (3, 2, 6, 4) and batch["all"].shape == (3, 6, 2, 4)
    assert batch["boxes"].shape == (3, 6, 4)
    again = ds[1]
    assert torch.equal(again["crops"][3], batch["crops"][3][1])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["boxes"], batch["boxes"][1])


def test_bad_item_is_a_leopart_error(tmp_path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    ds = CropDataset([bad], LeopartCrops(global_size=32, local_size=16))
    with pytest.raises(LeopartError, match="broken.jpg"):
        ds[0]


def test_cached_toy_images_equal_the_images_rendered_on_read() -> None:
    """``cache=True`` renders up front; image i must be the one rendered on the fly (and on disk)."""
    from leopart.train.multicrop import ToyImageDataset

    lazy = ToyImageDataset(3, 32, seed=7)
    cached = ToyImageDataset(3, 32, seed=7, cache=True)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(lazy[i]), np.asarray(cached[i]))
    assert not np.array_equal(np.asarray(cached[0]), np.asarray(cached[1]))


def test_fresh_toy_images_are_new_every_epoch_and_reach_the_workers() -> None:
    """``fresh=True``: epoch e reads generator images e·n..e·n+n-1; CropDataset.set_epoch passes the
    epoch down, so the images of an epoch are the same whatever the worker count."""
    from leopart.data.toy import image_rng, render_toy_image
    from leopart.train.multicrop import ToyImageDataset

    fresh = ToyImageDataset(2, 32, seed=7, fresh=True)
    crops = CropDataset(fresh, LeopartCrops(global_size=32, local_size=16, min_intersection=None))
    crops.set_epoch(3)
    assert fresh.epoch == 3
    expected = render_toy_image(image_rng(7, "train", 3 * 2 + 1), 32)[0]
    np.testing.assert_array_equal(np.asarray(fresh[1]), expected)
    crops.set_epoch(0)
    np.testing.assert_array_equal(np.asarray(fresh[1]), np.asarray(ToyImageDataset(2, 32, seed=7)[1]))
    with pytest.raises(LeopartError, match="cache and fresh"):
        ToyImageDataset(2, 32, cache=True, fresh=True)


def test_forward_by_resolution_batches_same_size_runs_and_splits_per_crop() -> None:
    g = torch.Generator().manual_seed(0)
    crops = [torch.randn(2, 3, s, s, generator=g) for s in (8, 8, 4, 4, 4, 8)]
    calls = []

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(tuple(x.shape))
        return x.mean(dim=(1, 2, 3)), x.flatten(1).max(dim=1).values

    out = forward_by_resolution(crops, fn)
    assert calls == [(4, 3, 8, 8), (6, 3, 4, 4), (2, 3, 8, 8)]   # consecutive runs only
    assert len(out) == len(crops)
    for c, (mean, top) in zip(crops, out):
        torch.testing.assert_close(mean, c.mean(dim=(1, 2, 3)))
        torch.testing.assert_close(top, c.flatten(1).max(dim=1).values)
    single = forward_by_resolution(crops, lambda x: 2 * x)
    for c, y in zip(crops, single):
        assert torch.equal(y, 2 * c)

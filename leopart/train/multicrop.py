"""Multi-crop augmentation with crop-box tracking (spec §3.2, ``LeopartTransforms``).

Per image: ``n_global`` global crops (224², scale 0.25–1) and ``n_local`` local crops (96²,
scale 0.05–0.25), aspect ratio 3/4–4/3, each with colour jitter (0.8/0.8/0.8/0.2, p=0.8),
grayscale (p=0.2) and PIL Gaussian blur (σ ~ U[0.1, 2], p=0.5), **no flip** (a flip would break
the box alignment). Every crop's box is kept in ORIGINAL image pixels ``[x1, y1, x2, y2]`` and the
pairwise intersections with the global crops are expressed in each crop's resized frame
(:func:`relative_boxes`), which is what the loss RoI-aligns with.

Differences from the authors' code (documented, deliberate):
- The overlap resampling loop is bounded: after ``max_tries`` failed draws for one crop a
  :class:`LeopartError` names the image size and the overlap setting (the original loops forever).
- All randomness comes from a ``torch.Generator`` passed in (the original mixes torch's global RNG
  and Python's ``random``); :class:`CropDataset` seeds one per (seed, epoch, index), so the
  augmentation of a sample does not depend on worker count, rank or resumption.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import Dataset

from leopart.errors import LeopartError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# random primitives (torchvision semantics, explicit generator)


def _uniform(gen: torch.Generator, a: float, b: float) -> float:
    return float(torch.empty(1).uniform_(a, b, generator=gen).item())


def _bernoulli(gen: torch.Generator, p: float) -> bool:
    if p <= 0:
        return False
    if p >= 1:
        return True
    return float(torch.rand(1, generator=gen).item()) < p


def random_resized_crop_params(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator
) -> tuple[int, int, int, int]:
    """``torchvision.transforms.RandomResizedCrop.get_params`` with an explicit generator.

    Returns ``(top, left, h, w)`` in original pixels (10 tries, then the central-crop fallback).
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))  # float32, as torchvision
    lo, hi = float(log_ratio[0]), float(log_ratio[1])
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = torch.exp(torch.empty(1).uniform_(lo, hi, generator=gen)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def color_jitter(
    img: Image.Image, gen: torch.Generator, brightness: float, contrast: float, saturation: float, hue: float
) -> Image.Image:
    """``torchvision.transforms.ColorJitter`` (random order of the four ops) with a generator."""
    order = torch.randperm(4, generator=gen).tolist()
    b = _uniform(gen, max(0.0, 1 - brightness), 1 + brightness) if brightness > 0 else None
    c = _uniform(gen, max(0.0, 1 - contrast), 1 + contrast) if contrast > 0 else None
    s = _uniform(gen, max(0.0, 1 - saturation), 1 + saturation) if saturation > 0 else None
    h = _uniform(gen, -hue, hue) if hue > 0 else None
    for op in order:
        if op == 0 and b is not None:
            img = TF.adjust_brightness(img, b)
        elif op == 1 and c is not None:
            img = TF.adjust_contrast(img, c)
        elif op == 2 and s is not None:
            img = TF.adjust_saturation(img, s)
        elif op == 3 and h is not None:
            img = TF.adjust_hue(img, h)
    return img


@dataclass
class ColourAug:
    """Photometric augmentation of one crop (spec §3.2 step 4; DINO adds solarisation)."""

    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    solarize_p: float = 0.0

    def __call__(self, img: Image.Image, gen: torch.Generator) -> Image.Image:
        if _bernoulli(gen, self.jitter_p):
            img = color_jitter(img, gen, *self.jitter)
        if _bernoulli(gen, self.gray_p):
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if _bernoulli(gen, self.blur_p):
            img = img.filter(ImageFilter.GaussianBlur(radius=_uniform(gen, *self.blur_sigma)))
        if _bernoulli(gen, self.solarize_p):
            img = ImageOps.solarize(img, threshold=128)
        return img


def to_normalized_tensor(img: Image.Image, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32, ToTensor + Normalize."""
    return TF.normalize(TF.to_tensor(img), mean, std)


def to_pil(item: Any, what: str = "image") -> Image.Image:
    """Accept a PIL image, an image path, an (H, W, 3) uint8 array or a tuple whose first
    element is one of those; return an RGB PIL image."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, Image.Image):
        return item.convert("RGB") if item.mode != "RGB" else item
    if isinstance(item, (str, Path)):
        try:
            with Image.open(item) as im:
                return im.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - unreadable image is a user error
            raise LeopartError(f"{item}: cannot read image ({type(exc).__name__}: {exc})") from None
    if isinstance(item, np.ndarray):
        if item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8:
            return Image.fromarray(item)
        raise LeopartError(f"{what}: array images must be (H, W, 3) uint8, got {item.shape} {item.dtype}")
    raise LeopartError(f"{what}: unsupported dataset item type {type(item).__name__}")


# --------------------------------------------------------------------------------------------
# boxes


def _intersection_area(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def relative_boxes(
    boxes: torch.Tensor, crop_sizes: Sequence[int] | torch.Tensor, n_global: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection boxes of every global crop with every crop, in resized crop frames (spec §3.2).

    Args:
        boxes: (n, 4) crop boxes in original image pixels ``[x1, y1, x2, y2]``; the first
            ``n_global`` are the global crops.
        crop_sizes: (n,) side length in pixels each crop is resized to (square).
        n_global: number of global crops.

    Returns:
        ``gc`` (n_global, n, 4): ``gc[g, v]`` = I(g, v) in crop g's resized frame,
        ``size_g·(I − (x1_g, y1_g)) / (w_g, h_g)`` per coordinate;
        ``all`` (n, n_global, 4): ``all[v, g]`` = I(g, v) in crop v's resized frame.
        Both float32; I(g, v) is the intersection in original pixels.
    """
    b = torch.as_tensor(boxes, dtype=torch.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise LeopartError(f"relative_boxes: boxes must be (n, 4), got {tuple(b.shape)}")
    n = b.shape[0]
    sizes = torch.as_tensor(crop_sizes, dtype=torch.float64).reshape(-1)
    if sizes.numel() != n:
        raise LeopartError(f"relative_boxes: {sizes.numel()} crop sizes for {n} boxes")
    if not 1 <= n_global <= n:
        raise LeopartError(f"relative_boxes: n_global={n_global} with {n} boxes")
    g = b[:n_global]
    lt = torch.maximum(g[:, None, :2], b[None, :, :2])  # (G, n, 2)
    rb = torch.minimum(g[:, None, 2:], b[None, :, 2:])
    if not bool(torch.all(rb - lt > 0)):
        raise LeopartError("relative_boxes: a crop does not intersect a global crop (overlap not enforced?)")
    inter = torch.cat([lt, rb], dim=-1)  # (G, n, 4) original pixels
    origin = b[:, :2]  # (n, 2)
    wh = b[:, 2:] - b[:, :2]  # (n, 2)

    # gc[g, v]: crop g's frame
    o_g = origin[:n_global].repeat(1, 2)[:, None, :]  # (G, 1, 4)
    s_g = (sizes[:n_global, None] / wh[:n_global]).repeat(1, 2)[:, None, :]
    gc = (inter - o_g) * s_g
    # all[v, g]: crop v's frame
    inter_v = inter.transpose(0, 1)  # (n, G, 4)
    o_v = origin.repeat(1, 2)[:, None, :]  # (n, 1, 4)
    s_v = (sizes[:, None] / wh).repeat(1, 2)[:, None, :]
    all_ = (inter_v - o_v) * s_v
    return gc.float(), all_.float()


def boxes_to_original(rel: torch.Tensor, crop_box: torch.Tensor, crop_size: float) -> torch.Tensor:
    """Inverse of the frame transform: (..., 4) boxes in a crop's resized frame -> original px."""
    crop_box = torch.as_tensor(crop_box, dtype=torch.float64)
    wh = (crop_box[2:] - crop_box[:2]).repeat(2)
    return rel.double() * wh / float(crop_size) + crop_box[:2].repeat(2)


# --------------------------------------------------------------------------------------------
# the transform


class LeopartCrops:
    """Leopart multi-crop transform: PIL image + generator -> crops, boxes and relative boxes.

    Args:
        global_size / local_size: output side of global / local crops (toy 64/32, pvoc 224/96).
        n_global / n_local: number of crops (2 / 4).
        global_scale / local_scale: RandomResizedCrop area ranges (0.25–1 / 0.05–0.25).
        ratio: aspect-ratio range (3/4, 4/3).
        min_intersection: every crop after the first must overlap every global crop sampled
            before it by more than ``int(W·H·min_intersection)`` pixels, doubled for global
            crops (the 2nd global crop); ``None`` disables the check (DINO).
        colour: photometric augmentation (:class:`ColourAug`), per crop; a list gives one per
            crop index (DINO uses different blur/solarisation per global crop).
        flip_p: horizontal flip probability (0 for Leopart; boxes then stay valid).
        max_tries: draws per crop before the overlap requirement is declared impossible.
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_global: int = 2,
        n_local: int = 4,
        global_scale: tuple[float, float] = (0.25, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.25),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        min_intersection: float | None = 0.01,
        colour: ColourAug | Sequence[ColourAug] | None = None,
        flip_p: float = 0.0,
        max_tries: int = 100,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if n_global < 1 or n_local < 0:
            raise LeopartError(f"crops: need n_global >= 1 and n_local >= 0, got {n_global}/{n_local}")
        for key, sc in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not (0 < sc[0] <= sc[1] <= 1):
                raise LeopartError(f"crops.{key}: must satisfy 0 < min <= max <= 1, got {tuple(sc)}")
        if max_tries < 1:
            raise LeopartError(f"crops.max_tries: must be >= 1, got {max_tries}")
        self.global_size, self.local_size = int(global_size), int(local_size)
        self.n_global, self.n_local = int(n_global), int(n_local)
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.ratio = tuple(ratio)
        self.min_intersection = min_intersection
        n = self.n_global + self.n_local
        if colour is None:
            colour = ColourAug()
        self.colour = list(colour) if isinstance(colour, Sequence) else [colour] * n
        if len(self.colour) != n:
            raise LeopartError(f"crops.colour: {len(self.colour)} augmentations for {n} crops")
        self.flip_p = flip_p
        self.max_tries = int(max_tries)
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def n_crops(self) -> int:
        return self.n_global + self.n_local

    @property
    def crop_sizes(self) -> list[int]:
        """Resized side length of every crop index."""
        return [self.global_size] * self.n_global + [self.local_size] * self.n_local

    def sample_boxes(self, width: int, height: int, gen: torch.Generator) -> list[tuple[int, int, int, int]]:
        """Crop boxes ``(x1, y1, x2, y2)`` in original pixels satisfying the overlap rule."""
        thr = int(width * height * self.min_intersection) if self.min_intersection is not None else None
        boxes: list[tuple[int, int, int, int]] = []
        for i in range(self.n_crops):
            is_global = i < self.n_global
            scale = self.global_scale if is_global else self.local_scale
            need = None if (thr is None or i == 0) else (2 * thr if is_global else thr)
            for _ in range(self.max_tries):
                top, left, h, w = random_resized_crop_params(width, height, scale, self.ratio, gen)
                box = (left, top, left + w, top + h)
                if need is None or all(
                    _intersection_area(box, boxes[j]) > need for j in range(min(i, self.n_global))
                ):
                    boxes.append(box)
                    break
            else:
                raise LeopartError(
                    f"crops.min_intersection={self.min_intersection}: could not sample crop {i} of an image of "
                    f"size {width}x{height} overlapping the global crops by more than {need} px after "
                    f"{self.max_tries} tries (crops.max_tries); lower min_intersection or widen the crop scales"
                )
        return boxes

    def __call__(self, img: Image.Image, gen: torch.Generator) -> dict[str, Any]:
        """Crop and augment one image.

        Returns a dict with ``crops`` (list of n tensors (3, S_i, S_i), normalised),
        ``boxes`` (n, 4) float32 original-pixel boxes, ``gc`` (n_global, n, 4) and
        ``all`` (n, n_global, 4) relative boxes (see :func:`relative_boxes`; empty-valued
        when the overlap check is disabled and a crop misses a global crop).
        """
        img = to_pil(img)
        width, height = img.size
        boxes = self.sample_boxes(width, height, gen)
        crops = []
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            size = self.crop_sizes[i]
            c = TF.resized_crop(img, y1, x1, y2 - y1, x2 - x1, [size, size],
                                interpolation=TF.InterpolationMode.BILINEAR)
            if _bernoulli(gen, self.flip_p):
                c = TF.hflip(c)
            c = self.colour[i](c, gen)
            crops.append(to_normalized_tensor(c, self.mean, self.std))
        box_t = torch.tensor(boxes, dtype=torch.float32)
        out: dict[str, Any] = {"crops": crops, "boxes": box_t}
        if self.min_intersection is not None:
            out["gc"], out["all"] = relative_boxes(box_t, self.crop_sizes, self.n_global)
        return out


def collate_crops(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-image outputs of :class:`LeopartCrops`.

    Returns ``crops`` (list over crop index of (B, 3, S, S)), ``boxes`` (B, n, 4) and, when
    present, ``gc`` (B, n_global, n, 4) and ``all`` (B, n, n_global, 4).
    """
    if not samples:
        raise LeopartError("collate_crops: empty batch")
    n = len(samples[0]["crops"])
    out: dict[str, Any] = {
        "crops": [torch.stack([s["crops"][i] for s in samples]) for i in range(n)],
        "boxes": torch.stack([s["boxes"] for s in samples]),
    }
    for key in ("gc", "all"):
        if key in samples[0]:
            out[key] = torch.stack([s[key] for s in samples])
    return out


def forward_by_resolution(crops: Sequence[torch.Tensor],
                          fn: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]) -> list[Any]:
    """Run ``fn`` once per run of consecutive same-size crops, batched, and split its output per crop.

    DINO's ``MultiCropWrapper`` idea: the global crops go through the network as one batch, the
    local crops as another. ``crops`` are (B, 3, S_v, S_v) tensors with the same B; ``fn`` maps a
    (n·B, 3, S, S) batch to a tensor or a tuple of tensors with n·B rows (crop-major).

    Returns:
        One entry per crop: ``fn``'s output for that crop's B images (a tensor, or a tuple).
    """
    out: list[Any] = []
    i = 0
    while i < len(crops):
        j = i
        while j < len(crops) and crops[j].shape[-2:] == crops[i].shape[-2:]:
            j += 1
        y = fn(torch.cat(list(crops[i:j])))
        if isinstance(y, tuple):
            out += list(zip(*(t.chunk(j - i) for t in y)))
        else:
            out += list(y.chunk(j - i))
        i = j
    return out


# --------------------------------------------------------------------------------------------
# datasets


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch Generator seeded from (seed, epoch, index) via numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return g


class CropDataset(Dataset):
    """Wrap a dataset of images (PIL / path / uint8 array items) with a multi-crop transform.

    Sample ``i`` in epoch ``e`` is augmented with :func:`sample_generator` ``(seed, e, i)``, so
    augmentation is reproducible regardless of workers, ranks and resumption. Call
    :meth:`set_epoch` before iterating an epoch.
    """

    def __init__(self, base: Dataset, transform: LeopartCrops, seed: int = 0) -> None:
        self.base = base
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = to_pil(self.base[index], what=f"dataset item {index}")
        return self.transform(img, sample_generator(self.seed, self.epoch, index))


class ImagePathDataset(Dataset):
    """Images read from a list of paths as RGB PIL images (unreadable file -> LeopartError)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        return to_pil(self.paths[index])


class ToyImageDataset(Dataset):
    """``n`` synthetic toy images rendered by ``leopart.data.toy.render_toy_image``.

    Image ``i`` uses ``leopart.data.toy.image_rng(seed, split, i)``, so with the same seed and
    size it equals image ``i`` of the split that ``generate_toy`` writes to disk. By default each
    image is rendered when it is read (≈ 2.5 ms at 128², in the loader's worker); ``cache=True``
    renders all of them once up front into one ``(n, S, S, 3)`` uint8 array (``n·S²·3`` bytes,
    470 MB for 9,600 images at 128²) that forked loader workers share, which takes rendering off
    every later epoch. ``fresh=True`` instead draws ``n`` new images every epoch (epoch ``e`` reads
    images ``e·n … e·n + n − 1`` of the generator, :meth:`set_epoch`): the toy generator is
    infinite, so a trainer never sees an image twice and cannot memorise instances.
    """

    def __init__(self, n: int, image_size: int, seed: int = 0, split: str = "train", cache: bool = False,
                 fresh: bool = False) -> None:
        from leopart.data.toy import image_rng, render_toy_image

        if cache and fresh:
            raise LeopartError("images: cache and fresh exclude each other (fresh images are new every epoch)")
        self._render = render_toy_image
        self._rng = image_rng
        self.n, self.image_size, self.seed, self.split = int(n), int(image_size), int(seed), split
        self.fresh = bool(fresh)
        self.epoch = 0
        image_rng(self.seed, split, 0)  # validates the split name
        self._cache: np.ndarray | None = None
        if cache:
            from tqdm import tqdm

            arr = np.empty((self.n, self.image_size, self.image_size, 3), dtype=np.uint8)
            for i in tqdm(range(self.n), desc=f"rendering {self.n} toy images", unit="img", mininterval=5):
                arr[i] = self._render_array(i)
            self._cache = arr

    def set_epoch(self, epoch: int) -> None:
        """Select the images of ``epoch`` (only changes anything with ``fresh=True``)."""
        self.epoch = int(epoch)

    def _render_array(self, index: int) -> np.ndarray:
        image, _ = self._render(self._rng(self.seed, self.split, int(index)), self.image_size)
        return np.asarray(image, dtype=np.uint8)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Image.Image:
        if self._cache is not None:
            image = self._cache[index]
        else:
            image = self._render_array(self.epoch * self.n + int(index) if self.fresh else index)
        return Image.fromarray(np.ascontiguousarray(image))

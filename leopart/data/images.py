"""Evaluation image loading (spec §1.3) as a torch Dataset.

PIL open → ``.convert("RGB")`` → ``Resize((S, S))`` (squash, aspect ratio not kept; bilinear with
PIL antialiasing because the transform runs on PIL images) → ``ToTensor`` → ImageNet ``Normalize``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms

from leopart.errors import LeopartError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(input_size: int) -> transforms.Compose:
    """The evaluation transform: PIL image → normalised ``(3, S, S)`` float32 tensor."""
    return transforms.Compose([
        transforms.Resize((input_size, input_size), interpolation=transforms.InterpolationMode.BILINEAR,
                          antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def load_rgb(path: str | Path) -> Image.Image:
    """Open and decode an image as RGB.

    Raises:
        LeopartError: missing or unreadable/corrupt file (names it).
    """
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: image file is missing")
    try:
        with Image.open(p) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LeopartError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from None


class ImageDataset(Dataset):
    """Images as normalised tensors for feature extraction, in the given order.

    ``dataset[i]`` is a ``(3, S, S)`` float32 tensor (ImageNet-normalised) for ``image_paths[i]``.
    """

    def __init__(self, image_paths: Sequence[str | Path], input_size: int) -> None:
        if int(input_size) <= 0:
            raise LeopartError(f"input_size: must be positive, got {input_size}")
        self.image_paths = [Path(p) for p in image_paths]
        self.input_size = int(input_size)
        self.transform = eval_transform(self.input_size)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_rgb(self.image_paths[index]))


ImageFolderDataset = ImageDataset  # name used in docs/architecture.md

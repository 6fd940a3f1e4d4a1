"""Miniatures of the real reproduction's downloads, each in its real format (tests only).

- :func:`build_voc_zip`: the authors' ``voc_data.zip`` layout (``VOCSegmentation/{images,
  SegmentationClass, SegmentationClassAug, sets}``) holding real PVOC masks from
  ``shared/data/voc2012-masks`` and synthetic JPEG images of the same sizes.
- :func:`build_dino_full_checkpoint`: DINO's *full* training checkpoint of a ViT-S/16
  (``teacher``/``student`` with ``backbone.``/``module.backbone.`` keys, the DINO head, ``args`` as
  an ``argparse.Namespace``, ``epoch``, ``dino_loss``), as ``main_dino.py`` saves it.
- :func:`build_leopart_lightning_checkpoint`: a Leopart checkpoint as the authors' PyTorch Lightning
  1.4 training saves it (``state_dict`` with ``model.``/``teacher.`` keys, projection head and
  prototypes, callback states keyed by the callback *class*, ``AttributeDict`` hyper-parameters).
  The Lightning classes are pickled by reference from stand-in modules, so loading needs the
  tolerant unpickler exactly as the real file does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _voc_names(masks_root: Path, split: str, count: int) -> list[str]:
    names = (masks_root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    return names[:count]


def _synthetic_image(mask: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An RGB image whose regions follow the mask's classes (a colour per class plus noise)."""
    palette = rng.integers(0, 256, size=(256, 3))
    rgb = palette[mask].astype(np.float64) + rng.normal(0, 20, size=(*mask.shape, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def build_voc_zip(masks_root: Path, dest_zip: Path, n_train: int, n_val: int, seed: int = 0) -> dict[str, list[str]]:
    """Write the miniature authors' VOC archive; return the names per split."""
    rng = np.random.default_rng(seed)
    work = dest_zip.parent / "voc_src" / "VOCSegmentation"
    names = {"train": _voc_names(masks_root, "train", n_train), "val": _voc_names(masks_root, "val", n_val)}
    (work / "sets").mkdir(parents=True)
    for split, split_names in names.items():
        (work / "sets" / f"{split}.txt").write_text("\n".join(split_names) + "\n")
        for name in split_names:
            src = masks_root / "SegmentationClass" / f"{name}.png"
            mask_dirs = ["SegmentationClass"] + (["SegmentationClassAug"] if split == "train" else [])
            for d in mask_dirs:
                (work / d).mkdir(exist_ok=True)
                shutil.copy(src, work / d / f"{name}.png")
            (work / "images").mkdir(exist_ok=True)
            _synthetic_image(np.array(Image.open(src)), rng).save(work / "images" / f"{name}.jpg", quality=90)
    with zipfile.ZipFile(dest_zip, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(work.rglob("*")):
            zf.write(path, path.relative_to(work.parent).as_posix())
    shutil.rmtree(work.parent)
    return names


def _vit_small_state(seed: int) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).state_dict()


def _dino_head(seed: int, out_dim: int = 256) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"mlp.0.weight": torch.randn(2048, 384, generator=g) * 0.02, "mlp.0.bias": torch.zeros(2048),
            "mlp.2.weight": torch.randn(256, 2048, generator=g) * 0.02, "mlp.2.bias": torch.zeros(256),
            "last_layer.weight_g": torch.ones(out_dim, 1),
            "last_layer.weight_v": torch.randn(out_dim, 256, generator=g)}


def build_dino_full_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write DINO's full checkpoint layout; return the teacher backbone state (timm keys)."""
    teacher = _vit_small_state(seed)
    student = _vit_small_state(seed + 1)
    head = _dino_head(seed)
    ckpt = {
        "student": {**{f"module.backbone.{k}": v for k, v in student.items()},
                    **{f"module.head.{k}": v.clone() for k, v in head.items()}},
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.items()},
                    **{f"head.{k}": v for k, v in head.items()}},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, epochs=100, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 256)},
    }
    torch.save(ckpt, path)
    return teacher


def _lightning_stand_ins() -> tuple[type, type, dict[str, types.ModuleType]]:
    """Classes pickled by reference as ``pytorch_lightning.*`` (the real package is not needed)."""
    mods = {}
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint",
                 "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"):
        mods[name] = sys.modules.get(name) or types.ModuleType(name)
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": "pytorch_lightning.callbacks.model_checkpoint"})
    attribute_dict = type("AttributeDict", (dict,), {"__module__": "pytorch_lightning.utilities.parsing"})
    mods["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint = model_checkpoint
    mods["pytorch_lightning.utilities.parsing"].AttributeDict = attribute_dict
    return model_checkpoint, attribute_dict, mods


def build_leopart_lightning_checkpoint(path: Path, seed: int = 10) -> dict[str, torch.Tensor]:
    """Write the Lightning 1.4 checkpoint layout; return the student backbone state (timm keys)."""
    student = _vit_small_state(seed)
    teacher = _vit_small_state(seed + 1)
    g = torch.Generator().manual_seed(seed)
    head = {"projection_head.0.weight": torch.randn(2048, 384, generator=g) * 0.02,
            "projection_head.0.bias": torch.zeros(2048),
            "projection_head.2.weight": torch.randn(256, 2048, generator=g) * 0.02,
            "projection_head.2.bias": torch.zeros(256)}
    prototypes = {"prototypes.weight": torch.nn.functional.normalize(torch.randn(300, 256, generator=g), dim=1)}
    state_dict = {**{f"model.{k}": v for k, v in {**student, **head, **prototypes}.items()},
                  **{f"teacher.{k}": v.clone() for k, v in {**teacher, **head, **prototypes}.items()}}
    model_checkpoint, attribute_dict, mods = _lightning_stand_ins()
    saved = {name: sys.modules.get(name) for name in mods}
    sys.modules.update(mods)
    try:
        ckpt = {
            "epoch": 49, "global_step": 16350, "pytorch-lightning_version": "1.4.9",
            "state_dict": state_dict,
            "callbacks": {model_checkpoint: {"monitor": None, "best_model_score": None,
                                             "best_model_path": "", "current_score": None,
                                             "dirpath": "/checkpoints/leopart"}},
            "optimizer_states": [], "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": attribute_dict(arch="vit-small", patch_size=16, lr_heads=1e-4,
                                               lr_backbone=1e-5, num_prototypes=300),
        }
        torch.save(ckpt, path)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return student

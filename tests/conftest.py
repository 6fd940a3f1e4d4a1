"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LEOPART_SHARED", REPO_ROOT.parent / "shared"))
VOC_MASKS = SHARED / "data" / "voc2012-masks"


@pytest.fixture(scope="session")
def voc_masks_dir() -> Path:
    """The real PVOC 2012 train/val masks shipped beside the checkout (skip if absent)."""
    if not (VOC_MASKS / "SegmentationClass").is_dir():
        pytest.skip(f"real VOC masks not found at {VOC_MASKS}")
    return VOC_MASKS


@pytest.fixture()
def one_torch_thread():
    """One intra-op torch thread: on a shared 2-core machine it is several times faster than two."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

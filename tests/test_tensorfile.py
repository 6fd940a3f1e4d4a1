"""Tests for leopart.tensorfile: torch-free memory-mapped reading of torch.save files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leopart.tensorfile import TensorView, UnsupportedTensorFile, bfloat16_to_float32, open_tensor


def _mapped(arr) -> bool:
    """True when ``arr`` is a view onto an ``np.memmap`` (what leopart.io.release_pages walks)."""
    while arr is not None:
        if isinstance(arr, np.memmap):
            return True
        arr = getattr(arr, "base", None)
    return False


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.uint8, torch.int64, torch.bool])
def test_plain_tensor_equals_torch_load(tmp_path: Path, dtype: torch.dtype) -> None:
    t = (torch.randn(3, 1, 5, 4, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    torch.save(t, tmp_path / "t.pt")
    view = open_tensor(tmp_path / "t.pt")
    assert isinstance(view, TensorView) and view.torch_dtype == str(dtype)
    assert _mapped(view.array) and not view.array.flags.writeable
    np.testing.assert_array_equal(view.array, t.numpy())


def test_strided_and_offset_views(tmp_path: Path) -> None:
    base = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    torch.save(base.permute(0, 2, 3, 1), tmp_path / "perm.pt")  # non-contiguous strides
    np.testing.assert_array_equal(open_tensor(tmp_path / "perm.pt").array, base.permute(0, 2, 3, 1).numpy())
    torch.save(base[1], tmp_path / "slice.pt")  # torch saves the slice's own storage
    np.testing.assert_array_equal(open_tensor(tmp_path / "slice.pt").array, base[1].numpy())


def test_bfloat16_bits_convert_exactly(tmp_path: Path) -> None:
    t = torch.tensor([[1.0, -2.5, 3.140625, 1e-3]], dtype=torch.bfloat16)
    torch.save(t, tmp_path / "b.pt")
    view = open_tensor(tmp_path / "b.pt")
    assert view.bfloat16 and view.array.dtype == np.uint16
    np.testing.assert_array_equal(bfloat16_to_float32(view.array), t.float().numpy())


def test_unsupported_files_fall_back(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UnsupportedTensorFile):
        open_tensor(tmp_path / "junk.pt")
    torch.save({"a": torch.zeros(2)}, tmp_path / "d.pt")
    with pytest.raises(UnsupportedTensorFile, match="container"):
        open_tensor(tmp_path / "d.pt")
    torch.save({"a": 1, "b": [2, 3]}, tmp_path / "plain.pt")
    assert open_tensor(tmp_path / "plain.pt") == {"a": 1, "b": [2, 3]}
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # other globals: never unpickled here
    with pytest.raises(UnsupportedTensorFile, match="global"):
        open_tensor(tmp_path / "module.pt")

"""Tests for leopart.features.extract (streamed tokens + attention) and .external (embeddings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from leopart.errors import LeopartError
from leopart.features.external import load_embeddings
from leopart.features.extract import extract_features
from leopart.models.vit import build_vit, tokens_and_attention


class Images(Dataset):
    """A few fixed random images; optionally returned as (image, index) tuples."""

    def __init__(self, n: int, size: tuple[int, int], as_tuple: bool = False) -> None:
        self.x = torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(0))
        self.as_tuple = as_tuple

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return (self.x[i], i) if self.as_tuple else self.x[i]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_vit("custom", patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32, seed=0).eval()


@pytest.mark.parametrize("as_tuple", [False, True])
def test_extract_writes_tokens_and_attention(tmp_path: Path, model: torch.nn.Module, as_tuple: bool) -> None:
    data = Images(5, (32, 48), as_tuple=as_tuple)
    tok_path, attn_path = tmp_path / "tokens.npy", tmp_path / "attn.npy"
    report = extract_features(model, data, tok_path, attn_path, batch_size=2, progress=False)
    assert report["num_images"] == 5 and report["tokens_shape"] == [5, 4, 6, 32]
    assert report["attn_shape"] == [5, 2, 24] and report["grid"] == [4, 6] and report["seconds"] > 0
    tokens, attn = np.load(tok_path), np.load(attn_path)
    assert tokens.dtype == np.float32 and attn.dtype == np.float32
    with torch.no_grad():
        ref_tokens, ref_attn = tokens_and_attention(model, data.x)
    np.testing.assert_allclose(tokens, ref_tokens.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(attn, ref_attn.numpy(), atol=1e-6, rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attn.npy", "tokens.npy"]  # no temp files


def test_extract_failure_leaves_no_outputs(tmp_path: Path, model: torch.nn.Module) -> None:
    class Mixed(Images):
        def __getitem__(self, i: int):
            return self.x[i] if i < 2 else self.x[i, :, :16, :16]

    with pytest.raises(LeopartError, match="same size"):
        extract_features(model, Mixed(4, (32, 32)), tmp_path / "t.npy", tmp_path / "a.npy",
                         batch_size=2, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(LeopartError, match="empty dataset"):
        extract_features(model, Images(0, (32, 32)), tmp_path / "t.npy", tmp_path / "a.npy", progress=False)


# ---------------------------------------------------------------------------------- external


def emb(n: int = 3, side: int = 4, d: int = 5) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, side, side, d)).astype(np.float32)


def test_npy_grid_and_flat_round_trip(tmp_path: Path) -> None:
    e = emb()
    np.save(tmp_path / "grid.npy", e)
    out = load_embeddings(tmp_path / "grid.npy", expected_count=3)
    assert isinstance(out, np.memmap) and out.dtype == np.float32
    np.testing.assert_array_equal(out, e)
    np.save(tmp_path / "flat.npy", e.reshape(3, 16, 5).astype(np.float64))
    np.testing.assert_array_equal(load_embeddings(tmp_path / "flat.npy"), e)


def test_pt_layouts(tmp_path: Path) -> None:
    e = emb()
    torch.save(torch.from_numpy(e.reshape(3, 16, 5)), tmp_path / "all_pascal_val.pt")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "all_pascal_val.pt", expected_count=3), e)
    torch.save(torch.from_numpy(e).permute(0, 3, 1, 2).contiguous(), tmp_path / "nchw.pt")
    out = load_embeddings(tmp_path / "nchw.pt")
    assert out.shape == (3, 4, 4, 5)
    np.testing.assert_array_equal(out, e)
    torch.save(torch.from_numpy(e.reshape(3, 16, 5)).half(), tmp_path / "half.pt")
    out = load_embeddings(tmp_path / "half.pt")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, e, atol=2e-3, rtol=1e-3)


def test_embedding_errors_name_the_file(tmp_path: Path) -> None:
    e = emb()
    np.save(tmp_path / "nonsquare.npy", np.zeros((2, 15, 4), np.float32))
    with pytest.raises(LeopartError, match=r"nonsquare.npy: 15 tokens per image is not a square grid"):
        load_embeddings(tmp_path / "nonsquare.npy")
    np.save(tmp_path / "rank2.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(LeopartError, match=r"rank2.npy: .npy embeddings must be"):
        load_embeddings(tmp_path / "rank2.npy")
    np.save(tmp_path / "ints.npy", np.zeros((2, 4, 4, 3), np.int32))
    with pytest.raises(LeopartError, match=r"ints.npy: embeddings has dtype int32"):
        load_embeddings(tmp_path / "ints.npy")
    np.save(tmp_path / "ok.npy", e)
    with pytest.raises(LeopartError, match=r"ok.npy: embeddings for 3 images, but the split has 1449"):
        load_embeddings(tmp_path / "ok.npy", expected_count=1449)
    torch.save(torch.from_numpy(e), tmp_path / "nhwc.pt")
    with pytest.raises(LeopartError, match=r"nhwc.pt: 4-D .pt embeddings must be channels-first"):
        load_embeddings(tmp_path / "nhwc.pt")
    torch.save(torch.zeros(3, 16), tmp_path / "rank2.pt")
    with pytest.raises(LeopartError, match=r"rank2.pt: .pt embeddings must be"):
        load_embeddings(tmp_path / "rank2.pt")
    torch.save(torch.zeros(3, 15, 2), tmp_path / "nonsquare.pt")
    with pytest.raises(LeopartError, match=r"nonsquare.pt: 15 tokens"):
        load_embeddings(tmp_path / "nonsquare.pt")
    torch.save({"emb": torch.zeros(1)}, tmp_path / "dict.pt")
    with pytest.raises(LeopartError, match=r"dict.pt: embeddings file holds a dict"):
        load_embeddings(tmp_path / "dict.pt")
    torch.save(torch.zeros(3, 16, 2, dtype=torch.int64), tmp_path / "long.pt")
    with pytest.raises(LeopartError, match=r"long.pt: embeddings have dtype torch.int64"):
        load_embeddings(tmp_path / "long.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(LeopartError, match=r"junk.pt: cannot read embeddings"):
        load_embeddings(tmp_path / "junk.pt")
    with pytest.raises(LeopartError, match=r"missing.npy: embeddings file is missing"):
        load_embeddings(tmp_path / "missing.npy")
    (tmp_path / "e.h5").write_bytes(b"x")
    with pytest.raises(LeopartError, match=r"e.h5: embeddings must be .npy or .pt"):
        load_embeddings(tmp_path / "e.h5")

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


# --------------------------------------------------------------------- chunked import (bounded memory)


@pytest.mark.parametrize("layout", ["npy_flat16", "npy_grid32", "pt_flat16", "pt_nchw32", "pt_bf16"])
def test_import_embeddings_chunked_equals_whole(tmp_path: Path, layout: str) -> None:
    from leopart.features.external import import_embeddings

    e = emb(n=7, side=4, d=6)
    src = tmp_path / ("src.npy" if layout.startswith("npy") else "src.pt")
    if layout == "npy_flat16":
        np.save(src, e.reshape(7, 16, 6).astype(np.float16))
        expected, dtype = e.astype(np.float16), np.float16
    elif layout == "npy_grid32":
        np.save(src, e)
        expected, dtype = e, np.float32
    elif layout == "pt_flat16":
        torch.save(torch.from_numpy(e.reshape(7, 16, 6)).half(), src)
        expected, dtype = e.astype(np.float16), np.float16
    elif layout == "pt_nchw32":
        torch.save(torch.from_numpy(e).permute(0, 3, 1, 2).contiguous(), src)
        expected, dtype = e, np.float32
    else:
        t = torch.from_numpy(e.reshape(7, 16, 6)).bfloat16()
        torch.save(t, src)
        expected, dtype = t.float().numpy().reshape(7, 4, 4, 6), np.float32
    # 3 images of 4*4*6 values per chunk: 7 images need 3 chunks, the last one partial
    info = import_embeddings(src, tmp_path / "out.npy", expected_count=7, chunk_bytes=3 * 96 * np.dtype(dtype).itemsize)
    out = np.load(tmp_path / "out.npy")
    assert info["chunk_images"] == 3 and info["shape"] == [7, 4, 4, 6]
    assert out.dtype == dtype and out.shape == (7, 4, 4, 6)
    np.testing.assert_array_equal(out, expected)
    # float16 is kept exactly: converting the artefact gives the float32 values of the source
    np.testing.assert_array_equal(out.astype(np.float32), expected.astype(np.float32))


def test_import_embeddings_errors_leave_no_artefact(tmp_path: Path) -> None:
    from leopart.features.external import import_embeddings

    np.save(tmp_path / "ok.npy", emb())
    with pytest.raises(LeopartError, match=r"ok.npy: embeddings for 3 images, but the split has 4"):
        import_embeddings(tmp_path / "ok.npy", tmp_path / "out.npy", expected_count=4)
    assert not (tmp_path / "out.npy").exists()


def test_import_embeddings_memory_is_bounded_by_the_chunk(tmp_path: Path) -> None:
    """A 96 MiB float16 file converts in a child process whose RSS grows by far less than the file."""
    import subprocess
    import sys

    n, t, d = 256, 784, 256  # 256 * 784 * 256 * 2 bytes = 98 MiB
    src = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(src, mode="w+", dtype=np.float16, shape=(n, t, d))
    arr[:] = 1.5
    arr.flush()
    del arr
    code = (
        "import resource, sys\n"
        "from leopart.features.external import import_embeddings\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"import_embeddings({str(src)!r}, {str(tmp_path / 'out.npy')!r}, chunk_bytes=4 << 20)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    grown_mib = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                   text=True).stdout.strip())
    assert grown_mib < 40, f"RSS grew by {grown_mib} MiB converting a 98 MiB file in 4 MiB chunks"
    out = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert out.shape == (n, 28, 28, d) and out.dtype == np.float16 and float(out[-1, -1, -1, -1]) == 1.5


# ------------------------------------------------------------------------------- sharding


def test_shard_ranges_cover_the_split() -> None:
    from leopart.features.extract import shard_count, shard_range

    assert shard_count(10, None) == 1 and shard_range(10, None, 0) == (0, 10)
    assert shard_count(10, 4) == 3
    assert [shard_range(10, 4, i) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert shard_count(8, 4) == 2 and shard_count(0, 4) == 1
    with pytest.raises(LeopartError, match="shard 3 does not exist"):
        shard_range(10, 4, 3)
    with pytest.raises(LeopartError, match="features.shard_size"):
        shard_count(10, 0)


def test_sharded_extraction_merges_to_the_same_bytes(tmp_path: Path) -> None:
    """Shards of a multiple of the batch size, concatenated, equal the unsharded files byte for byte."""
    from torch.utils.data import Subset

    from leopart.features.extract import shard_count, shard_range
    from leopart.io import concat_npy

    model = build_vit("custom", patch_size=8, embed_dim=32, depth=2, num_heads=2, seed=0)
    images = Images(7, (32, 32))
    extract_features(model, images, tmp_path / "t.npy", tmp_path / "a.npy", batch_size=2, progress=False)
    shard_size = 4  # 2 batches per shard; last shard has 3 images (batches of 2 and 1, as unsharded)
    parts = []
    for i in range(shard_count(len(images), shard_size)):
        start, stop = shard_range(len(images), shard_size, i)
        parts.append((tmp_path / f"t{i}.npy", tmp_path / f"a{i}.npy"))
        extract_features(model, Subset(images, range(start, stop)), *parts[-1], batch_size=2, progress=False)
    concat_npy([t for t, _ in parts], tmp_path / "t_merged.npy", chunk_bytes=1000)
    concat_npy([a for _, a in parts], tmp_path / "a_merged.npy")
    assert (tmp_path / "t_merged.npy").read_bytes() == (tmp_path / "t.npy").read_bytes()
    assert (tmp_path / "a_merged.npy").read_bytes() == (tmp_path / "a.npy").read_bytes()
    np.save(tmp_path / "odd.npy", np.zeros((1, 3), np.float32))
    with pytest.raises(LeopartError, match=r"odd.npy: tokens shard has shape \(1, 3\)"):
        concat_npy([tmp_path / "t0.npy", tmp_path / "odd.npy"], tmp_path / "bad.npy", what="tokens")
    assert not (tmp_path / "bad.npy").exists()


def test_bf16_precision_is_close_and_validated(tmp_path: Path) -> None:
    model = build_vit("custom", patch_size=8, embed_dim=32, depth=2, num_heads=2, seed=0)
    images = Images(2, (32, 32))
    extract_features(model, images, tmp_path / "t.npy", tmp_path / "a.npy", progress=False)
    extract_features(model, images, tmp_path / "tb.npy", tmp_path / "ab.npy", progress=False, precision="bf16")
    t32, t16 = np.load(tmp_path / "t.npy"), np.load(tmp_path / "tb.npy")
    assert t16.dtype == np.float32 and 0 < np.abs(t16 - t32).max() < 0.1
    with pytest.raises(LeopartError, match="features.precision"):
        extract_features(model, images, tmp_path / "x.npy", tmp_path / "y.npy", progress=False, precision="fp16")

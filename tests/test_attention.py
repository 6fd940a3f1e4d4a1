"""Tests for leopart.features.attention (spec §3.4, §4.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import GaussianBlur

from leopart.errors import LeopartError
from leopart.features.attention import attention_masks, load_attention_masks, remove_small_components


def authors_process_attentions(attentions: torch.Tensor, spatial_res: int, threshold: float,
                               blur_sigma: float) -> torch.Tensor:
    """The original ``process_attentions`` (Leopart repo), ported verbatim as a reference."""
    from skimage.measure import label

    bs, nh = attentions.shape[:2]
    attentions = attentions.reshape(bs, nh, spatial_res, spatial_res)
    attentions = attentions.mean(dim=1, keepdim=True)
    attentions = GaussianBlur(7, sigma=(blur_sigma))(attentions)
    attentions = attentions.reshape(attentions.size(0), 1, spatial_res ** 2)
    val, idx = torch.sort(attentions)
    val /= torch.sum(val, dim=-1, keepdim=True)
    cumval = torch.cumsum(val, dim=-1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    th_attn[:, 0] = torch.gather(th_attn[:, 0], dim=1, index=idx2[:, 0])
    th_attn = th_attn.reshape(attentions.size(0), 1, spatial_res, spatial_res).float()
    for j, th_att in enumerate(th_attn):
        labelled = label(th_att.cpu().numpy().astype(int))
        for k in range(1, np.max(labelled) + 1):
            mask = labelled == k
            if np.sum(mask) <= 2:
                th_attn[j][torch.from_numpy(mask)] = 0
    return th_attn


def random_attention(n: int, heads: int, side: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2.5 * torch.randn(n, heads, side * side, generator=g), dim=-1)


@pytest.mark.parametrize("threshold", [0.6, 0.65])
def test_matches_authors_process_attentions(threshold: float) -> None:
    pytest.importorskip("skimage")
    attn = random_attention(12, 3, 14, seed=0)
    ours = attention_masks(attn.numpy(), (14, 14), threshold=threshold)
    ref = authors_process_attentions(attn.clone(), 14, threshold, 0.6)[:, 0].numpy().astype(np.uint8)
    assert ours.dtype == np.uint8 and ours.shape == (12, 14, 14)
    np.testing.assert_array_equal(ours, ref)
    assert 0 < ours.mean() < 1
    # the small-component rule is exercised by these maps
    assert (attention_masks(attn.numpy(), (14, 14), threshold=threshold, min_component=1) != ours).any()


def test_blur_matches_torchvision_transform_on_one_image() -> None:
    """With min_component=1 the mask is exactly "top mass of the torchvision-blurred map"."""
    attn = random_attention(1, 1, 10, seed=1)
    blurred = GaussianBlur(7, sigma=0.6)(attn.reshape(1, 1, 10, 10)).reshape(100)
    order = torch.sort(blurred, stable=True).indices
    ordered = blurred[order] / blurred.sum()
    expected = np.zeros(100, dtype=np.uint8)
    expected[order[torch.cumsum(ordered, 0) > 1 - 0.65].numpy()] = 1
    ours = attention_masks(attn, 10, threshold=0.65, min_component=1)
    np.testing.assert_array_equal(ours.reshape(100), expected)
    # without blur the result differs for this peaky map
    assert not np.array_equal(attention_masks(attn, 10, blur_sigma=0, min_component=1), ours)


def test_known_mass_split_and_small_component_rule() -> None:
    side = 4
    attn = np.full((1, 1, side * side), 0.3 / 15, dtype=np.float32)
    attn[0, 0, 5] = 0.7  # one token holds 70 % of the mass
    only_peak = attention_masks(attn, (side, side), threshold=0.65, blur_sigma=0, min_component=1)
    expected = np.zeros((1, side, side), dtype=np.uint8)
    expected[0, 1, 1] = 1
    np.testing.assert_array_equal(only_peak, expected)
    # the single-token component has <= 2 pixels: removed by the authors' rule
    assert attention_masks(attn, (side, side), threshold=0.65, blur_sigma=0, min_component=3).sum() == 0
    # keeping 75 % of the mass needs more than the peak: then 0.75 - 0.7 = 0.05 -> 3 more tokens
    more = attention_masks(attn, (side, side), threshold=0.75, blur_sigma=0, min_component=1)
    assert more.sum() == 1 + 3 and more[0, 1, 1] == 1
    # mean over heads: a second head without the peak halves its share (0.35 + 0.01 < 0.65)
    two_heads = np.concatenate([attn, np.full_like(attn, 1 / 16)], axis=1)
    assert attention_masks(two_heads, side, threshold=0.65, blur_sigma=0, min_component=1).sum() > 1


def test_isolated_pixel_vs_diagonal_pair_vs_diagonal_triple() -> None:
    m = np.zeros((1, 8, 8), dtype=bool)
    m[0, 0, 7] = True  # isolated pixel
    m[0, 2, 2] = m[0, 3, 3] = True  # 8-connected diagonal pair
    m[0, 5, 0] = m[0, 6, 1] = m[0, 7, 2] = True  # 8-connected diagonal triple
    keep2 = remove_small_components(m, 2)
    assert not keep2[0, 0, 7] and keep2[0, 2, 2] and keep2[0, 3, 3]
    keep3 = remove_small_components(m, 3)
    assert keep3.sum() == 3 and keep3[0, 5, 0] and keep3[0, 6, 1] and keep3[0, 7, 2]
    np.testing.assert_array_equal(remove_small_components(m, 1), m)


def test_components_never_connect_across_images() -> None:
    m = np.zeros((3, 5, 5), dtype=bool)
    m[0, 4, 4] = True  # touches image 1's pair only if the stack were 3-D connected
    m[1, 4, 4] = m[1, 4, 3] = True
    m[2, 0, 0] = True
    out = remove_small_components(m, 3)
    assert out.sum() == 0
    m[1, 3, 3] = True  # image 1 now has a 3-pixel component; images 0 and 2 still lose theirs
    out = remove_small_components(m, 3)
    assert out[1].sum() == 3 and out[0].sum() == 0 and out[2].sum() == 0


def test_batching_does_not_change_results() -> None:
    attn = random_attention(7, 2, 8, seed=3)
    a = attention_masks(attn, 8, batch=512)
    b = attention_masks(attn, 8, batch=2)
    np.testing.assert_array_equal(a, b)


def test_input_validation() -> None:
    attn = random_attention(2, 2, 6, seed=4)
    with pytest.raises(LeopartError, match="cls_attn: expected shape"):
        attention_masks(attn, (5, 6))
    with pytest.raises(LeopartError, match="threshold"):
        attention_masks(attn, 6, threshold=1.5)
    with pytest.raises(LeopartError, match="too large"):
        attention_masks(random_attention(1, 1, 3, seed=0), 3)
    bad = attn.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(LeopartError, match="non-finite"):
        attention_masks(bad, 6)


def test_load_authors_pt_and_npy(tmp_path: Path) -> None:
    masks = (torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.save(masks, tmp_path / "attn_dino_val.pt")
    loaded = load_attention_masks(tmp_path / "attn_dino_val.pt", expected_count=4, grid=(6, 6))
    assert loaded.dtype == np.uint8 and loaded.shape == (4, 6, 6)
    np.testing.assert_array_equal(loaded, masks[:, 0].numpy().astype(np.uint8))
    np.save(tmp_path / "m.npy", loaded)
    np.testing.assert_array_equal(load_attention_masks(tmp_path / "m.npy", grid=6), loaded)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    torch.save(torch.full((2, 1, 4, 4), 0.5), tmp_path / "soft.pt")
    with pytest.raises(LeopartError, match=r"soft.pt: attention masks must be 0/1"):
        load_attention_masks(tmp_path / "soft.pt")
    torch.save(torch.zeros(2, 1, 4, 4), tmp_path / "ok.pt")
    with pytest.raises(LeopartError, match=r"ok.pt: 2 attention masks, but the split has 3"):
        load_attention_masks(tmp_path / "ok.pt", expected_count=3)
    with pytest.raises(LeopartError, match=r"ok.pt: attention masks are 4x4, expected 28x28"):
        load_attention_masks(tmp_path / "ok.pt", grid=28)
    torch.save(torch.zeros(2, 3, 4, 4), tmp_path / "rgb.pt")
    with pytest.raises(LeopartError, match=r"rgb.pt: attention masks must have shape"):
        load_attention_masks(tmp_path / "rgb.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a tensor")
    with pytest.raises(LeopartError, match=r"broken.pt: cannot read attention masks"):
        load_attention_masks(tmp_path / "broken.pt")
    torch.save({"masks": torch.zeros(1)}, tmp_path / "dict.pt")
    with pytest.raises(LeopartError, match=r"dict.pt: attention mask file holds a dict"):
        load_attention_masks(tmp_path / "dict.pt")
    with pytest.raises(LeopartError, match=r"m.png: attention masks must be .npy or .pt"):
        (tmp_path / "m.png").write_bytes(b"x")
        load_attention_masks(tmp_path / "m.png")
    with pytest.raises(LeopartError, match=r"absent.npy: attention mask file is missing"):
        load_attention_masks(tmp_path / "absent.npy")


def test_import_attention_masks_in_chunks(tmp_path: Path) -> None:
    from leopart.features.attention import import_attention_masks

    masks = (torch.rand(9, 1, 6, 6, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    torch.save(masks, tmp_path / "attn_dino_train.pt")
    info = import_attention_masks(tmp_path / "attn_dino_train.pt", tmp_path / "out.npy",
                                  expected_count=9, grid=6, chunk_images=4)
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.uint8 and out.shape == (9, 6, 6)
    np.testing.assert_array_equal(out, masks[:, 0].numpy().astype(np.uint8))
    assert info["shape"] == [9, 6, 6] and info["fg_fraction"] == pytest.approx(float(masks.mean()))
    bad = masks.clone()
    bad[8, 0, 5, 5] = 0.5  # in the last chunk only
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(LeopartError, match=r"bad.pt: attention masks must be 0/1, found values such as \[0.5\]"):
        import_attention_masks(tmp_path / "bad.pt", tmp_path / "bad.npy", chunk_images=4)
    assert not (tmp_path / "bad.npy").exists()

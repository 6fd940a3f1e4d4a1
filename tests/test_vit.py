"""Tests for leopart.models.vit: construction, DINO pos-embed rule, tokens + CLS attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leopart.errors import LeopartError
from leopart.models.vit import build_vit, interpolate_pos_embed_dino, tokens_and_attention

TINY = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return build_vit("custom", seed=0, **TINY).eval()


def dino_reference(pos_embed: torch.Tensor, patch_size: int, img: torch.Tensor) -> torch.Tensor:
    """DINO's ``interpolate_pos_encoding(x, w, h)`` called as DINO does (``B, nc, w, h = x.shape``)."""
    B, nc, w, h = img.shape
    npatch = (w // patch_size) * (h // patch_size)
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    w0, h0 = w0 + 0.1, h0 + 0.1
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
        mode="bicubic",
    )
    assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def test_custom_vit_follows_dino_conventions(tiny: nn.Module) -> None:
    assert tiny.num_classes == 0 and isinstance(tiny.head, nn.Identity)
    assert tiny.pos_embed.shape == (1, 1 + 16, 32)
    lns = [m for m in tiny.modules() if isinstance(m, nn.LayerNorm)]
    assert lns and all(m.eps == 1e-6 for m in lns)
    gelus = [m for m in tiny.modules() if isinstance(m, nn.GELU)]
    assert len(gelus) == 2 and all(m.approximate == "none" for m in gelus)
    assert all(blk.attn.qkv.bias is not None for blk in tiny.blocks)
    assert tiny.blocks[0].mlp.fc1.out_features == 4 * 32


def test_seed_makes_init_deterministic_and_keeps_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_vit("custom", seed=7, **TINY).state_dict()
    after = torch.rand(1)
    assert torch.equal(before, after)  # global RNG untouched
    b = build_vit("custom", seed=7, **TINY).state_dict()
    c = build_vit("custom", seed=8, **TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


def test_vit_small_patch16_construction() -> None:
    m = build_vit()  # ViT-S/16, 224
    assert m.pos_embed.shape == (1, 197, 384)
    assert len(m.blocks) == 12 and m.blocks[0].attn.num_heads == 6 and m.blocks[0].attn.head_dim == 64
    assert m.patch_embed.proj.kernel_size == (16, 16)
    assert m.blocks[0].mlp.fc1.out_features == 1536
    assert all(mod.eps == 1e-6 for mod in m.modules() if isinstance(mod, nn.LayerNorm))
    assert 21.5e6 < sum(p.numel() for p in m.parameters()) < 22.0e6


def test_build_errors() -> None:
    with pytest.raises(LeopartError, match="not a timm model"):
        build_vit("no_such_vit")
    with pytest.raises(LeopartError, match="missing depth"):
        build_vit("custom", patch_size=8, embed_dim=32, num_heads=2)
    with pytest.raises(LeopartError, match="divisible"):
        build_vit("custom", patch_size=8, embed_dim=30, depth=1, num_heads=4)


def test_tokens_equal_forward_features_at_native_size(tiny: nn.Module) -> None:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens, cls_attn = tokens_and_attention(tiny, x)
        ref = tiny.forward_features(x)
    assert tokens.dtype == torch.float32 and cls_attn.dtype == torch.float32
    assert tokens.shape == (3, 4, 4, 32) and cls_attn.shape == (3, 2, 16)
    torch.testing.assert_close(tokens, ref[:, 1:].reshape(3, 4, 4, 32), atol=1e-5, rtol=1e-5)


def test_cls_attention_equals_explicit_recomputation(tiny: nn.Module) -> None:
    """Recompute the last block's attention from the input timm's own forward passes to it."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    captured = {}
    last = tiny.blocks[-1].attn
    handle = last.register_forward_hook(lambda mod, args, out: captured.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            tiny.forward_features(x)
            _, cls_attn = tokens_and_attention(tiny, x)
    finally:
        handle.remove()
    y = captured["x"]  # (B, 1+n, D), output of norm1
    heads, hd = last.num_heads, last.head_dim
    w, b = last.qkv.weight, last.qkv.bias
    ref = []
    for hi in range(heads):
        q = y @ w[hi * hd : (hi + 1) * hd].T + b[hi * hd : (hi + 1) * hd]
        k = y @ w[32 + hi * hd : 32 + (hi + 1) * hd].T + b[32 + hi * hd : 32 + (hi + 1) * hd]
        logits = torch.einsum("bd,bnd->bn", q[:, 0], k) / math.sqrt(hd)
        ref.append(torch.softmax(logits, dim=-1)[:, 1:])
    ref = torch.stack(ref, dim=1)
    torch.testing.assert_close(cls_attn, ref, atol=1e-6, rtol=1e-5)
    # not renormalised: the CLS->CLS entry is missing from the sum
    assert (cls_attn.sum(-1) < 1).all()


def test_interpolate_pos_embed_matches_dino_reference() -> None:
    pe = torch.randn(1, 1 + 16, 8, generator=torch.Generator().manual_seed(2))
    for hh, ww in [(3, 5), (6, 2), (7, 7), (28, 28)]:
        img = torch.zeros(1, 3, hh * 8, ww * 8)
        ours = interpolate_pos_embed_dino(pe, hh, ww)
        assert ours.shape == (1, 1 + hh * ww, 8)
        torch.testing.assert_close(ours, dino_reference(pe, 8, img), atol=0, rtol=0)
    assert interpolate_pos_embed_dino(pe, 4, 4) is pe
    # a 2x8 grid has as many tokens as 4x4 but is a different layout: DINO resamples it
    assert not torch.equal(interpolate_pos_embed_dino(pe, 2, 8)[:, 1:], pe[:, 1:])


def test_non_native_non_square_input_uses_dino_rule(tiny: nn.Module) -> None:
    x = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tokens, cls_attn = tokens_and_attention(tiny, x)
        # reference with timm's own blocks (fused attention) and DINO's positional embedding
        t = tiny.patch_embed(x).reshape(2, 15, 32)
        t = torch.cat((tiny.cls_token.expand(2, -1, -1), t), dim=1)
        t = t + dino_reference(tiny.pos_embed, 8, x)
        ref = tiny.norm(tiny.blocks(t))
    assert tokens.shape == (2, 3, 5, 32) and cls_attn.shape == (2, 2, 15)
    torch.testing.assert_close(tokens, ref[:, 1:].reshape(2, 3, 5, 32), atol=1e-5, rtol=1e-5)


def test_input_not_multiple_of_patch_is_an_error(tiny: nn.Module) -> None:
    with pytest.raises(LeopartError, match="multiple of the patch size"):
        tokens_and_attention(tiny, torch.zeros(1, 3, 30, 32))

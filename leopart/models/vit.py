"""The DINO-style Vision Transformer used everywhere (spec §2.1), built from timm modules.

The model is a plain timm :class:`~timm.models.vision_transformer.VisionTransformer` (no
classification head, no pooling) configured like DINO's ViT: qkv bias, LayerNorm eps 1e-6, exact
(erf) GELU, class token with a positional-embedding entry, no register tokens. Its parameter
names therefore match DINO / Leopart checkpoints one to one.

Feature extraction does *not* use timm's ``forward_features`` because

- timm resamples positional embeddings for other input sizes with its own rule, whereas the
  authors' features depend on DINO's rule (bicubic with ``scale_factor=(h+0.1)/√n``, see
  :func:`interpolate_pos_embed_dino`), and
- timm's fused attention does not expose the attention probabilities, while the evaluation needs
  the last block's CLS→patch attention.

:func:`tokens_and_attention` therefore runs timm's modules itself: patch embedding → CLS →
DINO-interpolated positional embedding → blocks 1..L-1 (timm) → the last block with explicitly
computed attention → final LayerNorm. At the native input size its tokens equal
``model.forward_features`` (tested).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leopart.errors import LeopartError

__all__ = [
    "build_vit",
    "interpolate_pos_embed_dino",
    "tokens_and_attention",
    "forward_tokens_and_attention",
    "patch_size_of",
    "vit_tokens",
    "set_drop_path",
]


def build_vit(
    arch: str = "vit_small_patch16_224",
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    img_size: int = 224,
    seed: int | None = None,
) -> nn.Module:
    """Build a randomly initialised DINO-style ViT (timm ``VisionTransformer``).

    Args:
        arch: a timm ViT name (e.g. ``"vit_small_patch16_224"`` = ViT-S/16, 384-d, 12 blocks,
            6 heads; ``"vit_base_patch8_224"`` = ViT-B/8) or ``"custom"``. For timm names, any
            of ``patch_size``/``embed_dim``/``depth``/``num_heads`` that is given overrides the
            named configuration. For ``"custom"`` all four are required (e.g. the toy ViT:
            patch 8, dim 192, depth 6, 3 heads).
        img_size: training/native input size in pixels (square); sets the positional-embedding
            grid to ``img_size // patch_size`` per side.
        seed: if given, the random initialisation is deterministic (the global torch RNG state
            is left untouched).

    Returns:
        The model with ``num_classes=0`` (no head), ``global_pool=''`` (no pooling),
        ``dynamic_img_size=True`` (accepts any input size that is a multiple of the patch size),
        qkv bias, LayerNorm eps 1e-6 and exact GELU; in train mode as timm returns it
        (all dropout/drop-path rates are 0, so train and eval mode compute the same function).
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    common = dict(
        num_classes=0,
        global_pool="",
        dynamic_img_size=True,
        img_size=img_size,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        act_layer=nn.GELU,
        class_token=True,
        no_embed_class=False,
        reg_tokens=0,
    )
    overrides = {
        k: v
        for k, v in dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads).items()
        if v is not None
    }
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if arch == "custom":
            missing = [k for k in ("patch_size", "embed_dim", "depth", "num_heads") if k not in overrides]
            if missing:
                raise LeopartError(f"arch 'custom': missing {', '.join(missing)}")
            if overrides["embed_dim"] % overrides["num_heads"]:
                raise LeopartError(
                    f"arch 'custom': embed_dim {overrides['embed_dim']} is not divisible by "
                    f"num_heads {overrides['num_heads']}"
                )
            model = VisionTransformer(mlp_ratio=4.0, **common, **overrides)
        else:
            if not timm.is_model(arch):
                raise LeopartError(f"arch {arch!r}: not a timm model name (or use 'custom')")
            try:
                model = timm.create_model(arch, pretrained=False, **common, **overrides)
            except TypeError as exc:
                raise LeopartError(f"arch {arch!r}: cannot build it as a DINO-style ViT ({exc})") from None
    _check_supported(model, where=f"arch {arch!r}")
    return model


def patch_size_of(model: nn.Module) -> tuple[int, int]:
    """The (height, width) patch size of a timm ViT in pixels."""
    ps = model.patch_embed.patch_size
    return (int(ps[0]), int(ps[1])) if isinstance(ps, (tuple, list)) else (int(ps), int(ps))


def interpolate_pos_embed_dino(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resample a ViT positional embedding to an ``h × w`` patch grid with DINO's rule.

    DINO (``VisionTransformer.interpolate_pos_encoding``) reshapes the patch part to a square
    ``√n × √n`` grid and calls ``F.interpolate(mode='bicubic', align_corners=False,
    scale_factor=((h + 0.1)/√n, (w + 0.1)/√n))``: the first factor applies to grid rows, i.e.
    to the image height (DINO names the height ``w`` because it unpacks ``B, nc, w, h =
    x.shape``). The scale factor itself, not the output size, defines the sampling positions,
    which is why this differs slightly from timm's ``resample_abs_pos_embed``. The CLS entry is
    kept unchanged and concatenated in front.

    Args:
        pos_embed: ``(1, 1 + n, D)``, entry 0 for CLS, then ``n`` patches row-major on a square
            grid.
        h, w: target grid (rows, columns) in patches.

    Returns:
        ``(1, 1 + h*w, D)`` in the input dtype; the input itself when the grid is unchanged
        (DINO's shortcut ``npatch == N and w == h``).
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, 1+n, D), got {tuple(pos_embed.shape)}")
    n = pos_embed.shape[1] - 1
    side = math.isqrt(n)
    if side * side != n:
        raise LeopartError(f"positional embedding has {n} patch entries, not a square grid")
    if h == side and w == side:
        return pos_embed
    dim = pos_embed.shape[-1]
    cls_pe = pos_embed[:, :1]
    grid = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    dtype = grid.dtype
    grid = F.interpolate(
        grid.float(),
        scale_factor=((h + 0.1) / math.sqrt(n), (w + 0.1) / math.sqrt(n)),
        mode="bicubic",
        align_corners=False,
    ).to(dtype)
    if grid.shape[-2:] != (h, w):  # DINO asserts the same
        raise RuntimeError(f"DINO interpolation produced grid {tuple(grid.shape[-2:])}, expected {(h, w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat((cls_pe, grid), dim=1)


def tokens_and_attention(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-norm patch tokens and last-block CLS attention of a DINO-style ViT.

    Args:
        model: a model from :func:`build_vit` (any timm ``VisionTransformer`` with a class token,
            no register tokens and standard ``Block``/``Attention`` modules).
        images: ``(B, 3, H, W)`` normalised images; ``H`` and ``W`` multiples of the patch size.

    Returns:
        ``tokens``: ``(B, h, w, D)`` float32, the final-LayerNorm output of the patch tokens
        (CLS dropped), row-major over the ``h = H/p``, ``w = W/p`` grid.
        ``cls_attn``: ``(B, heads, h*w)`` float32, the last block's post-softmax attention of the
        CLS query to every patch key, per head — softmax taken over all ``1 + h*w`` keys, the
        CLS→CLS entry dropped and *not* renormalised (spec §2.1).

    Gradients flow unless called under ``torch.no_grad``/``inference_mode``.
    """
    _check_supported(model, where=type(model).__name__)
    if images.ndim != 4 or images.shape[1] != 3:
        raise LeopartError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    x, h, w = embed_tokens(model, images)
    b = images.shape[0]
    blocks = list(model.blocks)
    for blk in blocks[:-1]:
        x = blk(x)
    x, attn = _block_with_attention(blocks[-1], x)
    x = model.norm(x)
    tokens = x[:, 1:].reshape(b, h, w, x.shape[-1]).float()
    cls_attn = attn[:, :, 0, 1:].float()
    return tokens, cls_attn


def embed_tokens(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Patch embedding + CLS token + DINO-interpolated positional embedding (before the blocks).

    Args:
        model: a :func:`build_vit` ViT.
        images: ``(B, 3, H, W)`` with H, W multiples of the patch size.

    Returns:
        ``(x, h, w)``: tokens ``(B, 1 + h*w, D)`` (CLS first, patches row-major) and the grid.
    """
    b, _, height, width = images.shape
    ph, pw = patch_size_of(model)
    if height % ph or width % pw:
        raise LeopartError(f"input size {height}x{width} is not a multiple of the patch size {ph}x{pw}")
    h, w = height // ph, width // pw
    x = model.patch_embed(images)
    x = x.reshape(b, h * w, x.shape[-1])  # NHWC (dynamic_img_size) or NLC, both row-major
    x = torch.cat((model.cls_token.expand(b, -1, -1), x), dim=1)
    x = x + interpolate_pos_embed_dino(model.pos_embed, h, w)
    return model.norm_pre(model.patch_drop(model.pos_drop(x))), h, w


def vit_tokens(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-norm CLS and patch tokens of a :func:`build_vit` ViT, for training.

    Same computation as :func:`tokens_and_attention` (DINO positional-embedding interpolation)
    but every block runs timm's own (fused) attention and no attention map is returned, which is
    cheaper for the student.

    Returns:
        ``cls`` (B, D) and ``tokens`` (B, h, w, D) in the compute dtype.
    """
    x, h, w = embed_tokens(model, images)
    b = images.shape[0]
    x = model.blocks(x)
    x = model.norm(x)
    return x[:, 0], x[:, 1:].reshape(b, h, w, x.shape[-1])


def set_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth linearly spaced 0 → ``rate`` over the blocks (spec §2.1); 0 turns it off."""
    from timm.layers import DropPath

    blocks = list(model.blocks)
    rates = np.linspace(0.0, float(rate), len(blocks)) if blocks else []
    for blk, r in zip(blocks, rates):
        for name in ("drop_path1", "drop_path2"):
            if hasattr(blk, name):
                setattr(blk, name, DropPath(float(r)) if r > 0 else nn.Identity())


#: Alias under the name used in ``docs/architecture.md``.
forward_tokens_and_attention = tokens_and_attention


def _block_with_attention(blk: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a timm pre-norm ``Block`` with explicitly computed attention (as DINO's ``Attention``).

    Returns the block output ``(B, N, D)`` and the attention probabilities ``(B, heads, N, N)``.
    """
    a = blk.attn
    y = blk.norm1(x)
    b, n, _ = y.shape
    qkv = a.qkv(y).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = a.q_norm(q), a.k_norm(k)
    attn = (q @ k.transpose(-2, -1)) * a.scale  # DINO's order of operations
    attn = attn.softmax(dim=-1)
    out = a.attn_drop(attn) @ v
    out = out.transpose(1, 2).reshape(b, n, a.num_heads * a.head_dim)
    out = a.proj_drop(a.proj(a.norm(out)))
    x = x + blk.drop_path1(blk.ls1(out))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, attn


def _check_supported(model: nn.Module, where: str) -> None:
    """Refuse ViT variants whose token layout or blocks :func:`tokens_and_attention` can't run."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    problems = []
    if not isinstance(model, VisionTransformer):
        problems.append(f"not a timm VisionTransformer ({type(model).__name__})")
    else:
        if model.cls_token is None:
            problems.append("no class token")
        if getattr(model, "reg_token", None) is not None:
            problems.append("register tokens")
        if getattr(model, "no_embed_class", False):
            problems.append("positional embedding without a class entry")
        if model.pos_embed is None:
            problems.append("no positional embedding")
        for i, blk in enumerate(model.blocks):
            if type(blk) is not Block or type(blk.attn) is not Attention:
                problems.append(f"block {i} is {type(blk).__name__}/{type(getattr(blk, 'attn', None)).__name__}")
                break
            if getattr(blk.attn, "gate", None) is not None:
                problems.append(f"block {i} has gated attention")
                break
    if problems:
        raise LeopartError(f"{where}: unsupported ViT variant ({'; '.join(problems)})")

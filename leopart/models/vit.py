"""The DINO-style Vision Transformer used everywhere (spec §2.1), built from timm modules.

The model is a plain timm :class:`~timm.models.vision_transformer.VisionTransformer` (no
classification head, no pooling). ``arch: custom`` is configured like DINO's ViT: qkv bias,
LayerNorm eps 1e-6, exact (erf) GELU, class token with a positional-embedding entry, no register
tokens; its parameter names therefore match DINO / Leopart checkpoints one to one. A timm name
keeps the named configuration (timm's ``vit_*_patch{8,16}_224`` are exactly that DINO layout), so
DINOv2-style ViTs come with theirs: patch 14, LayerScale, register tokens (``reg_tokens``) and a
positional embedding without a class entry (``no_embed_class``). Token order is always timm's:
CLS, then the registers, then the patches row-major.

Feature extraction does *not* use timm's ``forward_features`` because

- timm resamples positional embeddings for other input sizes with its own rule, whereas the
  authors' features depend on DINO's rule (bicubic with ``scale_factor=(h+0.1)/√n``, see
  :func:`interpolate_pos_embed_dino`), and
- timm's fused attention does not expose the attention probabilities, while the evaluation needs
  the last block's CLS→patch attention.

:func:`tokens_and_attention` therefore runs timm's modules itself: patch embedding → CLS →
DINO-interpolated positional embedding → blocks 1..L-1 (timm) → the last block with explicitly
computed attention → final LayerNorm. At the native input size its tokens equal
``model.forward_features`` (tested, register-token models included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leopart.errors import LeopartError

__all__ = [
    "ArchInfo",
    "arch_info",
    "build_vit",
    "interpolate_pos_embed_dino",
    "num_prefix_tokens",
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
    img_size: int | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build a randomly initialised ViT (timm ``VisionTransformer``).

    Args:
        arch: a timm ViT name (e.g. ``"vit_small_patch16_224"`` = ViT-S/16, 384-d, 12 blocks,
            6 heads; ``"vit_base_patch8_224"`` = ViT-B/8; ``"vit_small_patch14_reg4_dinov2"`` =
            DINOv2 ViT-S/14 with 4 registers) or ``"custom"``. A timm name keeps the named
            configuration (qkv bias, norm, LayerScale, register tokens, positional-embedding
            layout, default input size); any of ``patch_size``/``embed_dim``/``depth``/
            ``num_heads`` that is given overrides it. For ``"custom"`` all four are required
            (e.g. the toy ViT: patch 8, dim 192, depth 6, 3 heads) and the ViT is DINO's: qkv
            bias, LayerNorm eps 1e-6, exact GELU, class token with a positional-embedding entry,
            no registers.
        img_size: native input size in pixels (square); sets the positional-embedding grid to
            ``img_size // patch_size`` per side. None: the timm name's default (224 for
            ``vit_*_224``, 518 for timm's DINOv2 models), 224 for ``"custom"``.
        seed: if given, the random initialisation is deterministic (the global torch RNG state
            is left untouched).
        device: where the parameters are created; ``"meta"`` builds the structure without
            allocating or initialising anything (used by the config check, :func:`arch_info`).

    Returns:
        The model with ``num_classes=0`` (no head), ``global_pool=''`` (no pooling) and
        ``dynamic_img_size=True`` (accepts any input size that is a multiple of the patch size),
        in train mode as timm returns it.

    Raises:
        LeopartError: unknown name, missing ``custom`` keys, or a model
        :func:`tokens_and_attention` cannot run (not a timm ``VisionTransformer``, e.g. a
        ResNet; no class token; no absolute positional embedding; non-standard blocks).
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    common: dict = dict(num_classes=0, global_pool="", dynamic_img_size=True)
    if img_size is not None:
        common["img_size"] = int(img_size)
    dino_style = dict(
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
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
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
            common.setdefault("img_size", 224)
            model = VisionTransformer(mlp_ratio=4.0, **common, **dino_style, **overrides)
        else:
            if not timm.is_model(arch):
                raise LeopartError(f"arch {arch!r}: not a timm model name (or use 'custom')")
            try:
                model = timm.create_model(arch, pretrained=False, **common, **overrides)
            except TypeError as exc:
                # e.g. ResNet.__init__() got an unexpected keyword argument 'dynamic_img_size'
                raise LeopartError(
                    f"arch {arch!r}: not a timm VisionTransformer, which feature extraction needs ({exc})"
                ) from None
    _check_supported(model, where=f"arch {arch!r}")
    return model


@dataclass(frozen=True)
class ArchInfo:
    """What the pipeline needs to know about an architecture before building it.

    Attributes:
        patch_size: ``(height, width)`` of a patch in pixels; the token grid is the input size
            divided by it.
        embed_dim: token dimension ``D``.
        num_heads: attention heads (channels of the CLS attention).
        num_prefix_tokens: tokens before the patches (CLS + registers).
    """

    patch_size: tuple[int, int]
    embed_dim: int
    num_heads: int
    num_prefix_tokens: int


def arch_info(
    arch: str,
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
) -> ArchInfo:
    """Check that ``arch`` builds a ViT :func:`tokens_and_attention` can run, without allocating it.

    The model is built on the meta device (no memory, no initialisation; ~0.1 s after timm is
    imported) with :func:`build_vit`'s arguments, and the same support check is applied, so a
    ResNet or other non-ViT name is refused here rather than after the data stages.

    Raises:
        LeopartError: as :func:`build_vit`.
    """
    model = build_vit(arch, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                      device="meta")
    return ArchInfo(
        patch_size=patch_size_of(model),
        embed_dim=int(model.embed_dim),
        num_heads=int(model.blocks[-1].attn.num_heads),
        num_prefix_tokens=num_prefix_tokens(model),
    )


def patch_size_of(model: nn.Module) -> tuple[int, int]:
    """The (height, width) patch size of a timm ViT in pixels."""
    ps = model.patch_embed.patch_size
    return (int(ps[0]), int(ps[1])) if isinstance(ps, (tuple, list)) else (int(ps), int(ps))


def num_prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patches in a timm ViT's sequence: the CLS token and the registers."""
    return int(getattr(model, "num_prefix_tokens", 1))


def pos_embed_prefix(model: nn.Module) -> int:
    """Entries of ``model.pos_embed`` before the patch grid: 0 with ``no_embed_class`` (timm's
    DINOv2-with-registers layout: the registers and CLS get none), else one per prefix token
    (1 for DINO's ViT)."""
    return 0 if getattr(model, "no_embed_class", False) else num_prefix_tokens(model)


def interpolate_pos_embed_dino(
    pos_embed: torch.Tensor,
    h: int,
    w: int,
    num_prefix: int = 1,
    grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample a ViT positional embedding to an ``h × w`` patch grid with DINO's rule.

    DINO (``VisionTransformer.interpolate_pos_encoding``) reshapes the patch part to a square
    ``√n × √n`` grid and calls ``F.interpolate(mode='bicubic', align_corners=False,
    scale_factor=((h + 0.1)/√n, (w + 0.1)/√n))``: the first factor applies to grid rows, i.e.
    to the image height (DINO names the height ``w`` because it unpacks ``B, nc, w, h =
    x.shape``). The scale factor itself, not the output size, defines the sampling positions,
    which is why this differs slightly from timm's ``resample_abs_pos_embed``. The CLS entry is
    kept unchanged and concatenated in front.

    DINOv2 resamples with the same rule (offset 0.1, bicubic, no antialiasing), so it is used for
    every model. Prefix entries (CLS, and registers in timm's layout when they have entries) are
    kept unchanged.

    Args:
        pos_embed: ``(1, num_prefix + n, D)``: ``num_prefix`` entries for the prefix tokens, then
            ``n`` patches row-major.
        h, w: target grid (rows, columns) in patches.
        num_prefix: prefix entries (1 = DINO's CLS entry; 0 for timm's ``no_embed_class``
            models, see :func:`pos_embed_prefix`).
        grid: the stored ``(rows, columns)`` grid of the ``n`` patch entries; None = square.

    Returns:
        ``(1, num_prefix + h*w, D)`` in the input dtype; the input itself when the grid is
        unchanged (DINO's shortcut ``npatch == N and w == h``).
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, prefix+n, D), got {tuple(pos_embed.shape)}")
    n = pos_embed.shape[1] - num_prefix
    if grid is None or grid[0] == grid[1]:
        side = math.isqrt(n)
        if side * side != n:
            raise LeopartError(
                f"positional embedding has {n} patch entries after {num_prefix} prefix entries, "
                "not a square grid"
            )
        gh = gw = side
        scale = ((h + 0.1) / math.sqrt(n), (w + 0.1) / math.sqrt(n))
    else:
        gh, gw = int(grid[0]), int(grid[1])
        if gh * gw != n:
            raise LeopartError(f"positional embedding has {n} patch entries, not a {gh}x{gw} grid")
        scale = ((h + 0.1) / gh, (w + 0.1) / gw)
    if h == gh and w == gw:
        return pos_embed
    dim = pos_embed.shape[-1]
    prefix_pe = pos_embed[:, :num_prefix]
    patches = pos_embed[:, num_prefix:].reshape(1, gh, gw, dim).permute(0, 3, 1, 2)
    dtype = patches.dtype
    patches = F.interpolate(patches.float(), scale_factor=scale, mode="bicubic", align_corners=False).to(dtype)
    if patches.shape[-2:] != (h, w):  # DINO asserts the same
        raise RuntimeError(f"DINO interpolation produced grid {tuple(patches.shape[-2:])}, expected {(h, w)}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat((prefix_pe, patches), dim=1)


def tokens_and_attention(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-norm patch tokens and last-block CLS attention of a ViT.

    Args:
        model: a model from :func:`build_vit` (any timm ``VisionTransformer`` with a class token,
            an absolute positional embedding and standard ``Block``/``Attention`` modules;
            register tokens allowed).
        images: ``(B, 3, H, W)`` normalised images; ``H`` and ``W`` multiples of the patch size.

    Returns:
        ``tokens``: ``(B, h, w, D)`` float32, the final-LayerNorm output of the patch tokens
        (CLS and register tokens dropped), row-major over the ``h = H/p``, ``w = W/p`` grid.
        ``cls_attn``: ``(B, heads, h*w)`` float32, the last block's post-softmax attention of the
        CLS query to every patch key, per head — softmax taken over all ``1 + R + h*w`` keys
        (``R`` registers), the CLS→CLS and CLS→register entries dropped and *not* renormalised
        (spec §2.1).

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
    p = num_prefix_tokens(model)
    tokens = x[:, p:].reshape(b, h, w, x.shape[-1]).float()
    cls_attn = attn[:, :, 0, p:].float()
    return tokens, cls_attn


def embed_tokens(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Patch embedding + CLS (+ register) tokens + DINO-interpolated positional embedding.

    As timm's ``_pos_embed``: with a class entry in the positional embedding the prefix tokens are
    concatenated first and the embedding added to all; with ``no_embed_class`` it is added to the
    patches only and CLS and registers (which have none) are concatenated after.

    Args:
        model: a :func:`build_vit` ViT.
        images: ``(B, 3, H, W)`` with H, W multiples of the patch size.

    Returns:
        ``(x, h, w)``: tokens ``(B, P + h*w, D)`` (CLS, ``P - 1`` registers, then patches
        row-major; ``P`` = :func:`num_prefix_tokens`) and the grid.
    """
    b, _, height, width = images.shape
    ph, pw = patch_size_of(model)
    if height % ph or width % pw:
        raise LeopartError(f"input size {height}x{width} is not a multiple of the patch size {ph}x{pw}")
    h, w = height // ph, width // pw
    x = model.patch_embed(images)
    x = x.reshape(b, h * w, x.shape[-1])  # NHWC (dynamic_img_size) or NLC, both row-major
    prefix = [model.cls_token.expand(b, -1, -1)]
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(b, -1, -1))
    native = tuple(int(g) for g in model.patch_embed.grid_size)
    pos = interpolate_pos_embed_dino(model.pos_embed, h, w, num_prefix=pos_embed_prefix(model), grid=native)
    if getattr(model, "no_embed_class", False):
        x = torch.cat((*prefix, x + pos), dim=1)
    else:
        x = torch.cat((*prefix, x), dim=1)
        x = x + pos
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
    return x[:, 0], x[:, num_prefix_tokens(model):].reshape(b, h, w, x.shape[-1])


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
    from timm.layers import Attention, PatchEmbed
    from timm.models.vision_transformer import Block, VisionTransformer

    problems = []
    if not isinstance(model, VisionTransformer):
        problems.append(f"not a timm VisionTransformer ({type(model).__name__})")
    else:
        if model.cls_token is None:
            problems.append("no class token")
        if model.pos_embed is None:
            problems.append("no absolute positional embedding")
        if not isinstance(model.patch_embed, PatchEmbed):
            problems.append(f"patch embedding is {type(model.patch_embed).__name__}")
        for i, blk in enumerate(model.blocks):
            if type(blk) is not Block or type(blk.attn) is not Attention:
                problems.append(f"block {i} is {type(blk).__name__}/{type(getattr(blk, 'attn', None)).__name__}")
                break
            if getattr(blk.attn, "gate", None) is not None:
                problems.append(f"block {i} has gated attention")
                break
    if problems:
        raise LeopartError(f"{where}: unsupported ViT variant ({'; '.join(problems)})")

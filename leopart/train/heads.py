"""Training heads: Leopart projection head + prototypes (spec §2.2) and the DINO head.

All heads are discarded after training; only the backbone is used for evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leopart.errors import LeopartError


def init_linear_(module: nn.Module) -> None:
    """Spec §2.2 init: trunc-normal std 0.02 for Linear weights, zero bias; LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, n_layers: int) -> nn.Sequential:
    if n_layers < 1:
        raise LeopartError(f"head.n_layers: must be >= 1, got {n_layers}")
    if n_layers == 1:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
    for _ in range(n_layers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """MLP ``in→hidden→…→out`` with exact GELU, no norms; output L2-normalised (spec §2.2).

    Default dims are the paper's 384→2048→2048→256 (``n_layers=3``).
    """

    def __init__(self, in_dim: int = 384, hidden_dim: int = 2048, out_dim: int = 256, n_layers: int = 3) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, out_dim, n_layers)
        init_linear_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim), unit L2 norm along the last axis."""
        return F.normalize(self.mlp(x), dim=-1, p=2)


class Prototypes(nn.Module):
    """``Linear(dim → n_prototypes, bias=False)``; rows are re-normalised before every step."""

    def __init__(self, dim: int = 256, n_prototypes: int = 300) -> None:
        super().__init__()
        self.proto = nn.Linear(dim, n_prototypes, bias=False)
        init_linear_(self)

    @property
    def weight(self) -> torch.Tensor:
        """(n_prototypes, dim) prototype vectors."""
        return self.proto.weight

    @torch.no_grad()
    def normalize_(self) -> None:
        """L2-normalise every prototype row in place (scores become cosine similarities)."""
        w = F.normalize(self.proto.weight.data.clone(), dim=1, p=2)
        self.proto.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., n_prototypes) scores."""
        return self.proto(x)


class DINOHead(nn.Module):
    """DINO projection head (facebookresearch/dino ``DINOHead``).

    MLP ``in→hidden→…→bottleneck`` (GELU), L2-normalisation, then a weight-normalised linear
    layer ``bottleneck→out_dim`` without bias whose gain is fixed to 1 (``norm_last_layer=True``),
    i.e. every output unit is a cosine similarity with a unit vector. The direction parameter is
    ``last_layer_v`` (freeze it during the first epoch by zeroing its gradient).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
    ) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, n_layers)
        init_linear_(self.mlp)
        v = torch.empty(out_dim, bottleneck_dim)
        nn.init.trunc_normal_(v, std=0.02)
        # weight_norm(dim=0) with g ≡ 1: W = v / ||v||_row
        self.last_layer_v = nn.Parameter(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim) logits."""
        z = F.normalize(self.mlp(x), dim=-1, p=2)
        return F.linear(z, F.normalize(self.last_layer_v, dim=1, p=2))

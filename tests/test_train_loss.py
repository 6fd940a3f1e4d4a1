"""Leopart loss pieces (spec §3.4–3.7): RoI-align, queue, masked CE, EMA, schedules, param groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from leopart.errors import LeopartError
from leopart.train.heads import DINOHead, ProjectionHead, Prototypes
from leopart.train.leopart_loss import LeopartLoss, roi_align_boxes
from leopart.train.model_ema import ema_update_
from leopart.train.schedules import cosine_schedule, param_groups, set_schedule_values

# ------------------------------------------------------------------ RoI-align


def test_roi_align_of_constant_map_is_constant() -> None:
    x = torch.full((2, 3, 6, 6), 0.37)
    boxes = torch.tensor([[[0.0, 0.0, 6.0, 6.0], [1.2, 0.5, 4.7, 3.3]],
                          [[0.0, 2.0, 2.5, 6.0], [3.0, 3.0, 6.0, 6.0]]])
    out = roi_align_boxes(x, boxes, 7)
    assert out.shape == (4, 3, 7, 7)
    torch.testing.assert_close(out, torch.full_like(out, 0.37))


def test_roi_align_order_is_image_major() -> None:
    x = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(3)])
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).expand(3, 2, 4)
    out = roi_align_boxes(x, boxes, 7)
    assert out[:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


# ------------------------------------------------------------------ loss


def _setup(b: int = 2, k: int = 8, d: int = 4, g: int = 2, n: int = 4, grid: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    size_g, size_l, ps = grid * 8, grid * 4, 8
    sizes = [size_g] * g + [size_l] * (n - g)
    student = [torch.randn(b, k, s // ps, s // ps, generator=gen) for s in sizes]
    targets = torch.softmax(torch.randn(g, b, k, grid, grid, generator=gen), dim=2)
    gc = torch.zeros(b, g, n, 4)
    gc[..., 2:] = size_g
    all_ = torch.zeros(b, n, g, 4)
    for v in range(n):
        all_[:, v, :, 2:] = sizes[v]
    return student, targets, gc, all_, ps


def test_uniform_predictions_give_log_k() -> None:
    student, targets, gc, all_, ps = _setup()
    student = [torch.zeros_like(s) for s in student]
    loss_fn = LeopartLoss(n_prototypes=8, embed_dim=4, queue_length=0, loss_mask="all")
    loss, _ = loss_fn(student, targets, None, gc, all_, ps)
    assert loss.item() == pytest.approx(math.log(8), rel=1e-6)


def test_empty_mask_skips_pairs_and_tolerance_option() -> None:
    student, targets, gc, all_, ps = _setup()
    for s in student:
        s.requires_grad_(True)
    loss_fn = LeopartLoss(n_prototypes=8, embed_dim=4, queue_length=0, loss_mask="fg")
    zero = torch.zeros(2, 2, 4, 4)
    loss, stats = loss_fn(student, targets, zero, gc, all_, ps)
    assert loss.item() == 0.0 and stats["skipped_pairs"] == 2 * 3
    loss.backward()  # graph stays connected even when every pair is skipped
    ones = torch.ones(2, 2, 4, 4)
    tol = LeopartLoss(n_prototypes=8, embed_dim=4, queue_length=0, loss_mask="fg", mask_tolerance=1e-4)
    plain = LeopartLoss(n_prototypes=8, embed_dim=4, queue_length=0, loss_mask="all")
    a, _ = tol(student, targets, ones, gc, all_, ps)
    b, _ = plain(student, targets, None, gc, all_, ps)
    torch.testing.assert_close(a, b)


def test_loss_formula_by_hand() -> None:
    """Full-crop boxes on equal grids: CE(a, v) is the plain CE of RoI-aligned maps."""
    b, k, grid = 1, 5, 4
    gen = torch.Generator().manual_seed(1)
    student = [torch.randn(b, k, grid, grid, generator=gen) for _ in range(3)]
    targets = torch.softmax(torch.randn(2, b, k, grid, grid, generator=gen), dim=2)
    boxes = torch.zeros(b, 2, 3, 4)
    boxes[..., 2:] = 32.0
    all_ = torch.zeros(b, 3, 2, 4)
    all_[..., 2:] = 32.0
    loss_fn = LeopartLoss(n_prototypes=k, embed_dim=3, queue_length=0, loss_mask="all", student_temp=0.1)
    loss, _ = loss_fn(student, targets, None, boxes, all_, 8)
    full = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    from torchvision.ops import roi_align

    def ra(x: torch.Tensor) -> torch.Tensor:
        return roi_align(x, full, output_size=7, spatial_scale=1.0, sampling_ratio=-1, aligned=True)

    expected = 0.0
    for a in range(2):
        ce = []
        for v in range(3):
            if v == a:
                continue
            logp = torch.log_softmax(ra(student[v]) / 0.1, dim=1)
            ce.append(-(ra(targets[a]) * logp).sum(1).mean())
        expected += sum(ce) / 2
    torch.testing.assert_close(loss, expected / 2)


def test_queue_push_fifo_and_scores() -> None:
    g, b, h, w, k, d = 2, 2, 3, 3, 6, 4
    loss_fn = LeopartLoss(n_prototypes=k, embed_dim=d, n_global=g, queue_length=12, push_factor=5)
    gen = torch.Generator().manual_seed(0)
    emb = nn.functional.normalize(torch.randn(g, b, h, w, d, generator=gen), dim=-1)
    scores = torch.randn(g, b, h, w, k, generator=gen)
    mask = torch.zeros(g, b, h, w)
    mask[:, 0, 0, :3] = 1  # only 3 eligible tokens per crop, fewer than the push size 10
    protos = torch.randn(k, d, generator=gen)
    t1 = loss_fn.targets(scores, emb, mask, protos, gen)
    assert t1.shape == (g, b, k, h, w)
    torch.testing.assert_close(t1.sum(dim=2), torch.ones(g, b, h, w))
    eligible = emb[0, 0, 0, :3]
    got = loss_fn.queue[0, :3]
    assert all(any(torch.equal(r, e) for e in eligible) for r in got)  # pushed what existed
    assert (loss_fn.queue[0, 3:] == 0).all() and not loss_fn.queue_in_use(0)
    # push all tokens: 10 per step -> full after the second push; FIFO (newest first)
    first = loss_fn.queue[0, :3].clone()
    loss_fn.targets(scores, emb, None, protos, gen)
    assert torch.equal(loss_fn.queue[0, 10:12], first[:2]) and loss_fn.queue_in_use(0)
    # once full, the queue enters Sinkhorn, scored with the given prototypes: the current tokens'
    # targets change with them (same queue state and generator otherwise)
    state = loss_fn.queue.clone()
    with_protos = loss_fn.targets(scores, emb, None, protos, torch.Generator().manual_seed(1))
    loss_fn.queue.copy_(state)
    other_t = loss_fn.targets(scores, emb, None, -protos, torch.Generator().manual_seed(1))
    loss_fn.queue.copy_(state)
    again = loss_fn.targets(scores, emb, None, protos, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, with_protos)
    assert not torch.allclose(with_protos, other_t)


def test_bad_loss_options() -> None:
    with pytest.raises(LeopartError, match="loss.loss_mask"):
        LeopartLoss(loss_mask="everything")
    with pytest.raises(LeopartError, match="queue_scores_with"):
        LeopartLoss(queue_scores_with="both")


def test_attention_masks_wiring() -> None:
    loss_fn = LeopartLoss(n_prototypes=4, embed_dim=4, queue_length=0, loss_mask="bg")
    attn = torch.rand(2 * 3, 2, 64)
    attn[:, :, 27:29] += 5.0  # a strong 2-token peak plus diffuse mass
    m = loss_fn.loss_masks(attn, (8, 8), batch=3)
    assert m.shape == (2, 3, 8, 8) and set(m.unique().tolist()) <= {0.0, 1.0}
    fg = loss_fn.attention_fg(attn, (8, 8)).reshape(2, 3, 8, 8)
    torch.testing.assert_close(m, 1.0 - fg)


# ------------------------------------------------------------------ heads


def test_heads() -> None:
    head = ProjectionHead(16, 32, 8, 3)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    out = head(torch.randn(2, 3, 3, 16))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3, 3))
    protos = Prototypes(8, 5)
    assert protos.proto.bias is None
    protos.normalize_()
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(5))
    dh = DINOHead(16, out_dim=10, hidden_dim=32, bottleneck_dim=8)
    z = dh(torch.randn(4, 16))
    assert z.shape == (4, 10) and (z.abs() <= 1 + 1e-5).all()  # cosine similarities (g = 1)


# ------------------------------------------------------------------ schedules, EMA, groups


def test_cosine_schedule_formula_and_endpoints() -> None:
    t = 1000
    m = cosine_schedule(0.9995, 1.0, t)
    i = np.arange(t)
    np.testing.assert_allclose(m, 1 + 0.5 * (0.9995 - 1) * (1 + np.cos(np.pi * i / t)), rtol=0, atol=1e-15)
    assert m[0] == 0.9995 and len(m) == t and m[-1] < 1.0 and np.all(np.diff(m) > 0)
    wd = cosine_schedule(0.04, 0.5, t)
    assert wd[0] == pytest.approx(0.04) and wd[t // 2] == pytest.approx(0.27) and wd[-1] < 0.5
    lr = cosine_schedule(1e-4, 0.0, t)
    assert lr[0] == 1e-4 and 0 < lr[-1] < 1e-9
    w = cosine_schedule(1.0, 0.1, 20, warmup_steps=5, warmup_start=0.0)
    np.testing.assert_allclose(w[:5], [0.0, 0.25, 0.5, 0.75, 1.0])
    assert w[5] == 1.0 and len(w) == 20
    with pytest.raises(LeopartError):
        cosine_schedule(1.0, 0.0, 3, warmup_steps=4)


def test_ema_update_by_hand() -> None:
    teacher, student = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        teacher.bias.fill_(-1.0)
        student.weight.fill_(3.0)
        student.bias.fill_(5.0)
    ema_update_(teacher, student, 0.75)
    torch.testing.assert_close(teacher.weight, torch.full((2, 2), 0.75 * 1 + 0.25 * 3))
    torch.testing.assert_close(teacher.bias, torch.full((2,), 0.75 * -1 + 0.25 * 5))
    torch.testing.assert_close(student.weight, torch.full((2, 2), 3.0))


def test_param_groups_order_and_no_decay() -> None:
    from leopart.models.vit import build_vit

    vit = build_vit("custom", patch_size=8, embed_dim=16, depth=1, num_heads=2, img_size=32, seed=0)
    head, protos = ProjectionHead(16, 32, 8), Prototypes(8, 5)
    groups = param_groups(vit, [head, protos], lr_backbone=1e-5, lr_head=1e-4)
    assert [g["name"] for g in groups] == ["backbone-decay", "backbone-no-decay", "head-decay", "head-no-decay"]
    assert [g["lr"] for g in groups] == [1e-5, 1e-5, 1e-4, 1e-4]
    ids = [{id(p) for p in g["params"]} for g in groups]
    named = dict(vit.named_parameters())
    assert id(named["cls_token"]) in ids[0] and id(named["pos_embed"]) in ids[0]
    assert id(named["blocks.0.attn.qkv.weight"]) in ids[0]
    assert id(named["blocks.0.attn.qkv.bias"]) in ids[1] and id(named["norm.weight"]) in ids[1]
    assert id(protos.weight) in ids[2] and id(head.mlp[0].bias) in ids[3]
    every = [id(p) for g in groups for p in g["params"]]
    expected = {id(p) for m in (vit, head, protos) for p in m.parameters()}
    assert len(every) == len(set(every)) and set(every) == expected
    for n, p in list(vit.named_parameters()) + list(head.named_parameters()):
        in_no_decay = id(p) in ids[1] | ids[3]
        assert in_no_decay == (n.endswith(".bias") or p.ndim == 1), n
    opt = torch.optim.AdamW(groups)
    set_schedule_values(opt, 1.0, 2.0, 0.3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0, 0.3, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [1.0, 1.0, 2.0, 2.0]

"""Leopart and DINO trainers: learning, bit-identical resume, interruption, DDP equivalence."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from leopart.errors import LeopartError
from leopart.train.checkpoint import load_torch
from leopart.train.dino import DINOTrainer
from leopart.train.leopart_trainer import LeopartTrainer
from leopart.train.signals import TrainingInterrupted

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY_MODEL = {"arch": "custom", "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64}


def _images(n: int, size: int = 72, seed: int = 0) -> list[Image.Image]:
    """Smooth random images (blobs on a gradient), cheap to make."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.stack([xx * rng.uniform(), yy * rng.uniform(), np.full_like(xx, rng.uniform())], -1)
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.25)]
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img[blob] = rng.uniform(size=3)
        out.append(Image.fromarray((img * 255).astype(np.uint8)))
    return out


def _leopart_cfg(**over) -> dict:
    cfg = {
        "seed": 0, "model": dict(TINY_MODEL), "drop_path_rate": 0.0,
        "crops": {"global_size": 64, "local_size": 32},
        "head": {"hidden_dim": 48, "out_dim": 16, "n_prototypes": 12},
        "loss": {"queue_length": 16},
        "batch_size": 2, "epochs": 1, "device": "cpu", "progress": False,
    }
    for k, v in over.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return cfg


def _state_tensors(trainer) -> dict[str, torch.Tensor]:
    out = {f"s.{k}": v for k, v in trainer.student_module.state_dict().items()}
    out.update({f"t.{k}": v for k, v in trainer.teacher.state_dict().items()})
    out.update({f"l.{k}": v for k, v in trainer.loss.state_dict().items()})
    return out


def test_leopart_loss_falls_on_fixed_batch() -> None:
    cfg = _leopart_cfg(epochs=25, optim={"lr_backbone": 1e-3, "lr_head": 1e-3, "weight_decay": 0.0,
                                         "weight_decay_end": 0.0}, loss={"queue_length": 0})
    trainer = LeopartTrainer(cfg, _images(2))
    batch = next(iter(trainer._loader(0, 0)))
    losses = [trainer.train_step(batch)["loss"] for _ in range(25)]
    assert np.mean(losses[-5:]) < 0.8 * losses[0], losses


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    # batch 1, 4 images, 1 epoch: resume in the middle of an epoch; drop-path and a queue that
    # fills after two pushes make the RNG and loss state matter
    cfg = _leopart_cfg(batch_size=1, drop_path_rate=0.2, loss={"queue_length": 16, "push_factor": 10},
                       checkpoint_every_steps=2)
    imgs = _images(4)
    straight = LeopartTrainer(cfg, imgs, tmp_path / "a")
    straight.fit()
    assert straight.step == 4

    first = LeopartTrainer(cfg, imgs, tmp_path / "b")
    first.fit(max_steps=2)
    ckpt = tmp_path / "b" / "checkpoints" / "step_0000002.pt"
    assert ckpt.is_file()
    second = LeopartTrainer(cfg, imgs, tmp_path / "b")
    second.resume(ckpt)
    assert second.step == 2
    second.fit()
    a, b = _state_tensors(straight), _state_tensors(second)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in straight.log_rows] == [r["loss"] for r in second.log_rows]
    assert bool(straight.loss.queue_in_use(0))

    out = tmp_path / "a"
    for name in ("final.pt", "backbone_student.pt", "backbone_teacher.pt", "train_log.csv",
                 "train_log.parquet", "loss_curve.png", "train_summary.json"):
        assert (out / name).is_file(), name
    log = pd.read_parquet(out / "train_log.parquet")
    assert list(log["step"]) == [0, 1, 2, 3]
    assert {"step", "epoch", "loss", "lr", "wd", "momentum", "seconds"} <= set(log.columns)
    assert log["momentum"].iloc[0] == pytest.approx(0.9995)

    from leopart.models.checkpoints import load_backbone_weights
    from leopart.models.vit import build_vit

    vit = build_vit(**TINY_MODEL)
    load_backbone_weights(vit, out / "final.pt", "local")
    for k, v in vit.state_dict().items():
        assert torch.equal(v, straight.student_module.backbone.state_dict()[k])


def test_interrupt_saves_and_exits(tmp_path: Path) -> None:
    cfg = _leopart_cfg(batch_size=1, loss={"loss_mask": "all"})
    trainer = LeopartTrainer(cfg, _images(3), tmp_path)
    step = trainer.train_step

    def step_then_signal(batch):
        values = step(batch)
        if trainer.step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return values

    trainer.train_step = step_then_signal
    with pytest.raises(TrainingInterrupted) as exc:
        trainer.fit()
    assert exc.value.code == 128 + signal.SIGINT
    state = load_torch(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 1 and len(state["log"]) == 1
    assert (tmp_path / "train_log.csv").is_file()


def test_config_errors() -> None:
    with pytest.raises(LeopartError, match="crops.global_sise: unknown config key"):
        LeopartTrainer(_leopart_cfg(crops={"global_sise": 3}), _images(2))
    with pytest.raises(LeopartError, match="batch_size: the dataset has 2 images"):
        LeopartTrainer(_leopart_cfg(batch_size=4), _images(2))


def test_dino_student_fits_teacher_on_fixed_batch(tmp_path: Path) -> None:
    """On one fixed batch the DINO cross-entropy itself need not fall: the centre (EMA 0.9)
    flattens the teacher within ~10 steps, so CE = H(teacher) + KL(teacher‖student) rises with
    H(teacher). What training must reduce is the KL part — the student matching the targets."""
    cfg = {
        "seed": 0, "model": dict(TINY_MODEL), "drop_path_rate": 0.0,
        "crops": {"global_size": 64, "local_size": 32, "n_local": 2},
        "head": {"out_dim": 64, "hidden_dim": 48, "bottleneck_dim": 16},
        "optim": {"lr": 1e-3, "scale_lr_with_batch": False, "warmup_epochs": 0, "freeze_last_layer": 0},
        "loss": {"warmup_teacher_temp_epochs": 0},
        "batch_size": 4, "epochs": 25, "device": "cpu", "progress": False,
    }
    trainer = DINOTrainer(cfg, _images(4), tmp_path)
    batch = next(iter(trainer._loader(0, 0)))
    rows = [trainer.train_step(batch) for _ in range(25)]
    kl = [r["kl"] for r in rows]
    assert np.mean(kl[-5:]) < 0.5 * np.mean(kl[:3]), kl
    for r in rows:
        assert r["loss"] == pytest.approx(r["kl"] + r["teacher_entropy"], abs=1e-4)
    trainer.save_checkpoint(tmp_path / "ck.pt")
    from leopart.models.checkpoints import load_backbone_weights
    from leopart.models.vit import build_vit

    vit = build_vit(**TINY_MODEL)
    load_backbone_weights(vit, tmp_path / "ck.pt", "dino")  # DINO layout: teacher backbone
    torch.testing.assert_close(vit.pos_embed, trainer.teacher.backbone.pos_embed)


# ------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = LeopartTrainer(_leopart_cfg(batch_size=2, loss={"loss_mask": "all"}), _images(4))
        summary = trainer.fit()
        torch.save({"loss": summary["last"]["loss"], "state": trainer.student_module.state_dict()},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    """gloo DDP on 2 CPU processes (batch 2 each) = one process with batch 4: same loss (mean over
    ranks), same parameters after the steps. ``loss_mask="all"``: with fg masks the authors'
    per-process mask-weighted mean differs from the global one by design."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = LeopartTrainer(_leopart_cfg(batch_size=4, loss={"loss_mask": "all"}), _images(4))
    summary = single.fit()
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["loss"] == pytest.approx(summary["last"]["loss"], rel=1e-5)
    assert r1["loss"] == pytest.approx(r0["loss"], rel=1e-7)
    ref = single.student_module.state_dict()
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k  # ranks stay in sync
        torch.testing.assert_close(v, ref[k], atol=2e-6, rtol=0, msg=k)


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    cfg = _leopart_cfg(batch_size=1, loss={"loss_mask": "all"})
    trainer = LeopartTrainer(cfg, _images(2), tmp_path)
    trainer.save_checkpoint(tmp_path / "ck.pt")
    other = LeopartTrainer(_leopart_cfg(batch_size=1, loss={"loss_mask": "all", "student_temp": 0.2}),
                           _images(2))
    with pytest.raises(LeopartError, match=r"config key loss.student_temp differs .*\(0.1 there, 0.2 now\)"):
        other.resume(tmp_path / "ck.pt")
    same = LeopartTrainer(dict(cfg, progress=True, num_workers=0), _images(2))
    same.resume(tmp_path / "ck.pt")  # runtime-only keys may change
    with pytest.raises(LeopartError, match="not a leopart-pipeline training checkpoint"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        same.resume(tmp_path / "bad.pt")


# ------------------------------------------------------------------ teacher EMA order


@pytest.mark.parametrize("order", ["after_forward", "before_forward"])
def test_ema_order_decides_which_teacher_the_forward_sees(order: str) -> None:
    """Known answer with m = 0.5 (first entry of the momentum schedule): the teacher after one step
    is m·θ_t + (1−m)·θ_s with θ_s the student before the step; the teacher's forward saw θ_t
    (authors' order, unit prototypes) or already that blend (``before_forward``)."""
    cfg = _leopart_cfg(batch_size=1, ema_update=order, loss={"loss_mask": "all", "queue_length": 0},
                       optim={"momentum_teacher": 0.5})
    trainer = LeopartTrainer(cfg, _images(1))
    batch = next(iter(trainer._loader(0, 0)))
    with torch.no_grad():  # the step's first action, so that θ_t and θ_s are what the step uses
        trainer.student_module.prototypes.normalize_()
        trainer.teacher.prototypes.normalize_()
    theta_t = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    theta_s = {k: v.clone() for k, v in trainer.student_module.state_dict().items()}
    seen: dict[str, torch.Tensor] = {}
    hook = trainer.teacher.register_forward_pre_hook(
        lambda module, args: seen.update({k: v.clone() for k, v in module.state_dict().items()}))
    values = trainer.train_step(batch)
    hook.remove()
    m = values["momentum"]
    assert m == 0.5
    blend = {k: m * theta_t[k] + (1 - m) * theta_s[k] for k in theta_t}
    for k, v in trainer.teacher.state_dict().items():
        torch.testing.assert_close(v, blend[k], msg=k)
    expected_seen = theta_t if order == "after_forward" else blend
    for k, v in seen.items():
        torch.testing.assert_close(v, expected_seen[k], msg=k)
    assert not torch.allclose(theta_t["prototypes.proto.weight"], blend["prototypes.proto.weight"])
    norms = seen["prototypes.proto.weight"].norm(dim=1)
    if order == "after_forward":
        torch.testing.assert_close(norms, torch.ones_like(norms))
    else:
        assert float(norms.max()) < 1 - 1e-3


def test_ema_order_default_is_the_authors_and_others_are_refused() -> None:
    assert LeopartTrainer.DEFAULT_CONFIG["ema_update"] == "after_forward"
    with pytest.raises(LeopartError, match="ema_update: expected 'after_forward' or 'before_forward', got 'late'"):
        LeopartTrainer(_leopart_cfg(ema_update="late"), _images(2))

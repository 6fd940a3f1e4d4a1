"""Training machinery shared by the Leopart and DINO trainers.

- ViT helpers: :func:`vit_tokens` (CLS + patch tokens with DINO positional-embedding
  interpolation, fused attention), :func:`set_drop_path`.
- Config merging with one-line errors for unknown keys (:func:`merge_config`).
- Deterministic data order: :func:`epoch_batches` (global batches from a seeded permutation,
  rank ``r`` takes slice ``r`` of each global batch, so DDP on ``W`` processes sees exactly the
  images one process would see with a ``W``-times larger batch).
- :class:`BaseTrainer`: epochs/steps, DataLoader, tqdm progress, per-step log rows (CSV +
  Parquet + loss-curve PNG), checkpoints every N epochs (and/or steps) and on SIGINT/SIGTERM,
  all written atomically, and :meth:`BaseTrainer.resume` restoring models, optimiser, step and
  RNG states so that a resumed CPU run continues bit-identically.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from leopart.errors import LeopartError
from leopart.io import atomic_path, write_parquet, write_text

CHECKPOINT_FORMAT = "leopart-pipeline-train-v1"

#: Config keys that may change between a checkpoint and its resumption (they do not change
#: results): progress bar, workers, device, checkpoint cadence, backbone initialisation (the
#: weights come from the checkpoint).
RUNTIME_KEYS = frozenset({"progress", "num_workers", "device", "checkpoint_every_epochs",
                          "checkpoint_every_steps", "init"})


# --------------------------------------------------------------------------------------------
# ViT helpers


def vit_tokens(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-norm CLS and patch tokens of a :func:`leopart.models.vit.build_vit` ViT.

    Same computation as :func:`leopart.models.vit.tokens_and_attention` (DINO positional-
    embedding interpolation) but every block runs timm's own (fused) attention and no attention
    map is returned, which is cheaper for the student.

    Returns:
        ``cls`` (B, D) and ``tokens`` (B, h, w, D) in the compute dtype.
    """
    from leopart.models.vit import embed_tokens  # noqa: PLC0415

    x, h, w = embed_tokens(model, images)
    b = images.shape[0]
    x = model.blocks(x)
    x = model.norm(x)
    return x[:, 0], x[:, 1:].reshape(b, h, w, x.shape[-1])


def set_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth linearly spaced 0 → ``rate`` over the blocks (spec §2.1)."""
    from timm.layers import DropPath  # noqa: PLC0415

    blocks = list(model.blocks)
    rates = np.linspace(0.0, float(rate), len(blocks)) if blocks else []
    for blk, r in zip(blocks, rates):
        for name in ("drop_path1", "drop_path2"):
            if hasattr(blk, name):
                setattr(blk, name, DropPath(float(r)) if r > 0 else nn.Identity())


def build_backbone(model_cfg: Mapping[str, Any], init_cfg: Mapping[str, Any], seed: int) -> nn.Module:
    """``build_vit(**model_cfg, seed)`` then load ``init_cfg`` (``source``/``path``/``trust``)."""
    from leopart.models.checkpoints import load_backbone_weights  # noqa: PLC0415
    from leopart.models.vit import build_vit  # noqa: PLC0415

    model = build_vit(seed=seed, **dict(model_cfg))
    source = init_cfg.get("source", "random")
    if source != "random":
        load_backbone_weights(model, init_cfg.get("path"), source, trust=bool(init_cfg.get("trust", False)))
    return model


# --------------------------------------------------------------------------------------------
# config


def merge_config(defaults: Mapping[str, Any], user: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
    """Deep-merge ``user`` into a copy of ``defaults``; unknown keys raise LeopartError naming them.

    A default of ``None`` accepts any value (including dicts) as-is.
    """
    out = copy.deepcopy(dict(defaults))
    for k, v in (user or {}).items():
        key = f"{where}.{k}" if where else str(k)
        if k not in defaults:
            raise LeopartError(f"{key}: unknown config key (known: {', '.join(sorted(defaults))})")
        if isinstance(defaults[k], Mapping) and defaults[k]:
            if not isinstance(v, Mapping):
                raise LeopartError(f"{key}: expected a mapping, got {type(v).__name__}")
            out[k] = merge_config(defaults[k], v, key)
        else:
            out[k] = copy.deepcopy(v)
    return out


def plain_config(obj: Any) -> Any:
    """Config as plain JSON-able Python types (safe for weights-only checkpoints)."""
    if isinstance(obj, Mapping):
        return {str(k): plain_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_config(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# --------------------------------------------------------------------------------------------
# distributed / devices


def dist_info() -> tuple[int, int]:
    """(world_size, rank); (1, 0) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → cuda if available else cpu; in DDP, cuda means ``cuda:<local rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LeopartError(f"device: {name!r} requested but CUDA is not available")
        if name == "cuda" and dist_info()[0] > 1:
            return torch.device("cuda", torch.cuda.current_device())
    elif name != "cpu":
        raise LeopartError(f"device: expected cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast on CUDA for ``precision="bf16"``; a no-op otherwise (fp32)."""
    if precision not in ("fp32", "bf16"):
        raise LeopartError(f"precision: expected fp32 or bf16, got {precision!r}")
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def epoch_batches(n: int, batch_size: int, world: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's index lists for one epoch (drop_last over global batches of world·batch)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), 7]).generate_state(1)[0]))
    perm = torch.randperm(n, generator=g).tolist()
    gb = world * batch_size
    out = []
    for i in range(n // gb):
        chunk = perm[i * gb:(i + 1) * gb]
        out.append(chunk[rank * batch_size:(rank + 1) * batch_size])
    return out


# --------------------------------------------------------------------------------------------
# checkpoints, RNG, logs


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: Path) -> dict[str, Any]:
    """Read one of our checkpoints (weights-only unpickling) with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: checkpoint file is missing")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable checkpoint is a user error
        raise LeopartError(f"{p}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise LeopartError(f"{p}: not a leopart-pipeline training checkpoint")
    return obj


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def write_log(out_dir: Path, rows: list[dict[str, Any]], stem: str = "train_log") -> None:
    """Write per-step rows as ``<stem>.csv`` and ``<stem>.parquet`` plus ``loss_curve.png``."""
    import pandas as pd  # noqa: PLC0415

    df = pd.DataFrame(rows)
    write_text(out_dir / f"{stem}.csv", df.to_csv(index=False))
    write_parquet(out_dir / f"{stem}.parquet", df)
    if len(df) and "loss" in df:
        plot_loss(out_dir / "loss_curve.png", df["step"].to_numpy(), df["loss"].to_numpy())


def plot_loss(path: Path, steps: np.ndarray, loss: np.ndarray) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 10:
        k = max(5, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """First (dotted path, a, b) where two plain configs differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d is not None:
                return d
        return None
    return None if a == b else (path, a, b)


class _SignalGuard:
    """Record SIGINT/SIGTERM instead of dying, so the loop can checkpoint and exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class TrainingInterrupted(SystemExit):
    """Raised after the interruption checkpoint is written (exit code 128 + signal)."""


# --------------------------------------------------------------------------------------------
# the loop


class BaseTrainer:
    """Epoch/step loop with checkpoints, logs and resumption.

    Subclasses implement :meth:`train_step` (one optimiser step on a collated batch, returning
    the log values), :meth:`model_state` / :meth:`load_model_state` and :meth:`export`.

    Config keys used here: ``seed``, ``batch_size`` (per process), ``epochs``, ``num_workers``,
    ``checkpoint_every_epochs``, ``checkpoint_every_steps``, ``progress``.
    """

    kind = "base"

    def __init__(self, config: dict[str, Any], dataset: Any, out_dir: str | Path | None, collate: Any) -> None:
        self.config = config
        self.dataset = dataset
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.collate = collate
        self.world, self.rank = dist_info()
        self.seed = int(config["seed"])
        self.batch_size = int(config["batch_size"])
        self.epochs = int(config["epochs"])
        if self.batch_size < 1 or self.epochs < 1:
            raise LeopartError(f"batch_size/epochs: must be >= 1, got {self.batch_size}/{self.epochs}")
        n = len(dataset)
        self.iters_per_epoch = n // (self.world * self.batch_size)
        if self.iters_per_epoch == 0:
            raise LeopartError(
                f"batch_size: the dataset has {n} images, fewer than one global batch "
                f"({self.world} process(es) x {self.batch_size})"
            )
        self.total_steps = self.epochs * self.iters_per_epoch
        self.step = 0
        self.log_rows: list[dict[str, Any]] = []
        self.generator = torch.Generator()  # for sampling inside the loss (queue pushes)
        self.generator.manual_seed(self.seed + 1_000_003 * self.rank)

    # ---------------------------------------------------------------- to implement

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def model_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_model_state(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def export(self, out_dir: Path) -> None:
        """Write ``backbone_student.pt`` / ``backbone_teacher.pt`` (plain ViT state dicts, loadable
        with ``load_backbone_weights(source="local")``) and ``train_summary.json`` into ``out_dir``.

        Subclasses hold ``student_module`` and ``teacher``, each with a ``backbone``.
        """
        from leopart.io import write_json  # noqa: PLC0415

        save_torch(out_dir / "backbone_student.pt", self.student_module.backbone.state_dict())
        save_torch(out_dir / "backbone_teacher.pt", self.teacher.backbone.state_dict())
        last = self.log_rows[-1] if self.log_rows else {}
        write_json(out_dir / "train_summary.json", {
            "kind": self.kind, "steps": self.step, "epochs": self.epochs, "world_size": self.world,
            "iters_per_epoch": self.iters_per_epoch, "final_loss": last.get("loss"),
            "config": plain_config(self.config),
        })

    def run(self, resume: str | Path | None = None, max_steps: int | None = None) -> dict[str, Any]:
        """Resume (``"auto"``: from ``out_dir/checkpoints/last.pt`` if it exists), train, and wait
        for every DDP rank. Returns the summary of :meth:`fit`."""
        if resume == "auto":
            last = self.out_dir / "checkpoints" / "last.pt" if self.out_dir is not None else None
            resume = last if last is not None and last.is_file() else None
        if resume is not None:
            self.resume(resume)
        summary = self.fit(max_steps=max_steps)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return summary

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.kind,
            "step": self.step,
            "epoch": self.step // self.iters_per_epoch,
            "total_steps": self.total_steps,
            "world_size": self.world,
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "log": list(self.log_rows),
            "config": plain_config(self.config),
            **self.model_state(),
        }

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the full training state atomically (rank 0; other ranks write ``*.rank<r>.pt``
        with their own RNG/queue state)."""
        p = Path(path)
        state = self.state_dict()
        if self.rank == 0:
            save_torch(p, state)
        else:
            save_torch(p.with_name(f"{p.stem}.rank{self.rank}{p.suffix}"), state)

    def resume(self, path: str | Path) -> None:
        """Restore models, optimiser, loss state, step, log and RNG states from a checkpoint."""
        p = Path(path)
        if self.rank != 0:
            own = p.with_name(f"{p.stem}.rank{self.rank}{p.suffix}")
            if own.is_file():
                p = own
        state = load_torch(p)
        if state.get("kind") != self.kind:
            raise LeopartError(f"{p}: checkpoint is a {state.get('kind')!r} run, not {self.kind!r}")
        if int(state["total_steps"]) != self.total_steps:
            raise LeopartError(
                f"{p}: checkpoint was made for {state['total_steps']} total steps, this config has "
                f"{self.total_steps} (epochs/batch_size/dataset size changed?)"
            )
        stored = state.get("config", {})
        now = plain_config(self.config)
        for key in sorted(set(stored) | set(now)):
            if key in RUNTIME_KEYS:
                continue
            diff = _first_difference(stored.get(key), now.get(key), key)
            if diff is not None:
                path, old, new = diff
                raise LeopartError(
                    f"{p}: config key {path} differs from the checkpoint ({old!r} there, {new!r} now); "
                    "resuming would not continue the same run"
                )
        self.load_model_state(state)
        self.step = int(state["step"])
        self.log_rows = list(state.get("log", []))
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])

    # ---------------------------------------------------------------- loop

    def _loader(self, epoch: int, start_iter: int) -> DataLoader:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        batches = epoch_batches(len(self.dataset), self.batch_size, self.world, self.rank, self.seed, epoch)
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        nw = int(self.config.get("num_workers", 0))
        return DataLoader(
            self.dataset, batch_sampler=batches[start_iter:], collate_fn=self.collate, num_workers=nw,
            generator=g, pin_memory=False, persistent_workers=False,
        )

    def _checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints"

    def fit(self, max_steps: int | None = None) -> dict[str, Any]:
        """Train until the end of the schedule (or ``max_steps`` more steps).

        Checkpoints: ``checkpoints/epoch_XXXX.pt`` every ``checkpoint_every_epochs`` epochs,
        ``checkpoints/step_XXXXXXX.pt`` every ``checkpoint_every_steps`` steps (if set),
        ``checkpoints/last.pt`` at every checkpoint and on interruption, ``final.pt`` plus the
        exported artefacts at the end. On SIGINT/SIGTERM the current step finishes, ``last.pt``
        and the logs are written, then :class:`TrainingInterrupted` (a SystemExit) is raised.
        """
        from tqdm.auto import tqdm  # noqa: PLC0415

        every_ep = self.config.get("checkpoint_every_epochs")
        every_st = self.config.get("checkpoint_every_steps")
        ckdir = self._checkpoint_dir()
        stop_at = self.total_steps if max_steps is None else min(self.total_steps, self.step + int(max_steps))
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.kind, unit="step",
                   disable=not self.config.get("progress", True) or self.rank != 0, dynamic_ncols=True)
        with _SignalGuard() as guard:
            while self.step < stop_at:
                epoch, start_iter = divmod(self.step, self.iters_per_epoch)
                t_prev = time.perf_counter()
                for batch in self._loader(epoch, start_iter):
                    t0 = time.perf_counter()
                    values = self.train_step(batch)
                    self.step += 1
                    now = time.perf_counter()
                    # seconds: whole iteration (waiting for data included); step_seconds: compute
                    row = {"step": self.step - 1, "epoch": epoch, **values,
                           "seconds": now - t_prev, "step_seconds": now - t0}
                    t_prev = now
                    self.log_rows.append(row)
                    bar.update(1)
                    bar.set_postfix(loss=f"{values.get('loss', math.nan):.4f}")
                    end_of_epoch = self.step % self.iters_per_epoch == 0
                    save = []
                    if ckdir is not None:
                        if end_of_epoch and every_ep and (epoch + 1) % int(every_ep) == 0:
                            save.append(ckdir / f"epoch_{epoch + 1:04d}.pt")
                        if every_st and self.step % int(every_st) == 0:
                            save.append(ckdir / f"step_{self.step:07d}.pt")
                        if save or guard.signum is not None:
                            save.append(ckdir / "last.pt")
                    for p in save:
                        self.save_checkpoint(p)
                    if (save or end_of_epoch) and self.rank == 0 and self.out_dir is not None:
                        write_log(self.out_dir, self.log_rows)
                    if guard.signum is not None:
                        bar.close()
                        raise TrainingInterrupted(128 + guard.signum)
                    if self.step >= stop_at:
                        break
        bar.close()
        if self.step >= self.total_steps and self.out_dir is not None:
            self.save_checkpoint(self.out_dir / "final.pt")
            if self.rank == 0:
                self.export(self.out_dir)
        if self.rank == 0 and self.out_dir is not None:
            write_log(self.out_dir, self.log_rows)
        last = self.log_rows[-1] if self.log_rows else {}
        return {"step": self.step, "total_steps": self.total_steps, "last": last}


def all_reduce_mean(x: float, device: torch.device) -> float:
    """Mean of a Python float over processes (identity without DDP)."""
    world, _ = dist_info()
    if world == 1:
        return float(x)
    t = torch.tensor([float(x)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world

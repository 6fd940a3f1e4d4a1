"""Training checkpoints: atomic writes, weights-only reads, RNG states and the same-run check.

A checkpoint is a dict with ``format`` = :data:`CHECKPOINT_FORMAT`, plain-typed values (loadable
with ``torch.load(weights_only=True)``) and the run's config; rank ``r > 0`` of a DDP run writes
its own ``<stem>.rank<r>.pt`` beside rank 0's file (:func:`rank_path`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from leopart.errors import LeopartError

CHECKPOINT_FORMAT = "leopart-pipeline-train-v1"

#: Config keys that may change between a checkpoint and its resumption (they do not change
#: results): progress bar, workers, device, checkpoint cadence, backbone initialisation (the
#: weights come from the checkpoint).
RUNTIME_KEYS = frozenset({"progress", "num_workers", "device", "checkpoint_every_epochs",
                          "checkpoint_every_steps", "init"})


def rank_path(path: str | Path, rank: int) -> Path:
    """Where rank ``rank`` keeps its part of checkpoint ``path`` (``path`` itself for rank 0)."""
    p = Path(path)
    return p if rank == 0 else p.with_name(f"{p.stem}.rank{rank}{p.suffix}")


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically, with the same bytes as a plain ``torch.save(obj, path)``.

    torch names the archive's top folder after the file it writes (``last.pt`` holds
    ``last/data.pkl``, ...), so saving to a temporary *name* would put that random name into the
    bytes and change the SHA-256 recorded in provenance on every save. The file is therefore
    written under its final name inside a temporary folder beside ``path`` and renamed onto
    ``path`` (same file system: atomic); an interrupted save leaves ``path`` untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=final.parent) as tmp_dir:
        tmp = Path(tmp_dir) / final.name
        torch.save(obj, tmp)
        os.replace(tmp, final)


def load_torch(path: Path) -> dict[str, Any]:
    """Read one of our checkpoints (weights-only unpickling) with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise LeopartError(f"{p}: checkpoint file is missing")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is a user error, whatever the cause
        raise LeopartError(f"{p}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise LeopartError(f"{p}: not a leopart-pipeline training checkpoint")
    return obj


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU, and every CUDA device once CUDA is initialised)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def plain_config(obj: Any) -> Any:
    """Config as plain JSON-able Python types (safe for weights-only checkpoints)."""
    if isinstance(obj, Mapping):
        return {str(k): plain_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_config(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """First (dotted path, a, b) where two plain configs differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d is not None:
                return d
        return None
    return None if a == b else (path, a, b)


def check_same_run(stored: Mapping[str, Any], now: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume checkpoint ``path`` (config ``stored``) with config ``now`` when a key
    outside :data:`RUNTIME_KEYS` differs; the message names the first such key and both values."""
    for key in sorted(set(stored) | set(now)):
        if key in RUNTIME_KEYS:
            continue
        diff = _first_difference(stored.get(key), now.get(key), key)
        if diff is not None:
            where, old, new = diff
            raise LeopartError(
                f"{path}: config key {where} differs from the checkpoint ({old!r} there, {new!r} now); "
                "resuming would not continue the same run"
            )

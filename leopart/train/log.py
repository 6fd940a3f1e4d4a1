"""Training logs: per-step rows as CSV and Parquet, and the loss-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from leopart.io import atomic_path, write_parquet, write_text


def write_log(out_dir: Path, rows: list[dict[str, Any]], stem: str = "train_log") -> None:
    """Write per-step rows as ``<stem>.csv`` and ``<stem>.parquet`` plus ``loss_curve.png``."""
    import pandas as pd

    df = pd.DataFrame(rows)
    write_text(out_dir / f"{stem}.csv", df.to_csv(index=False))
    write_parquet(out_dir / f"{stem}.parquet", df)
    if len(df) and "loss" in df:
        plot_loss(out_dir / "loss_curve.png", df["step"].to_numpy(), df["loss"].to_numpy())


def plot_loss(path: Path, steps: np.ndarray, loss: np.ndarray) -> None:
    """Loss per step and its running mean (over ~1/50 of the run) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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

"""The figures of the HTML report (matplotlib, Agg backend) and the numpy graph layout they use.

Every function returns a :class:`matplotlib.figure.Figure` (the stages save it as PNG) and reads
nothing from disk: the inputs are arrays and tables, so each figure can be tested on a hand-made
case. Colours of classes are the VOC palette (:func:`leopart.overlay.voc_palette`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from leopart.overlay import colourise, voc_palette

#: colour of labels Infomap left isolated (module 0)
ISOLATED_COLOUR = "#bbbbbb"
#: colour of the foreground of a binary mask panel (background stays black)
FOREGROUND_RGB = (255, 255, 255)


def _palette_colour(class_id: int) -> tuple[float, float, float]:
    return tuple(float(c) / 255.0 for c in voc_palette(256)[class_id])


def _legend_handles(ids: Sequence[int], names: Sequence[str]) -> list[Patch]:
    return [Patch(facecolor=_palette_colour(i), edgecolor="0.3",
                  label=names[i] if i < len(names) else f"id {i}") for i in ids]


# ---- Table 5 and per-class IoU ----------------------------------------------------------------
def table_figure(
    table: pd.DataFrame,
    per_class: Mapping[str, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
) -> Figure:
    """Table 5 (row, method, model, mIoU ± std, n, paper) above one bar panel per row.

    Args:
        table: the rows of ``table5.csv`` (columns row, method, model, miou, std, n, paper).
        per_class: row name -> ``(mean, std)`` per-class IoU in % over the row's seeds/runs, each
            ``(C,)``; NaN for a class absent from the ground truth. Rows not in it get no panel.
        class_names: ``C`` class names.
    """
    rows = [r for r in table["row"] if r in per_class]
    fig = plt.figure(figsize=(12, 2.2 + 2.3 * len(rows)), layout="constrained")
    grid = fig.add_gridspec(1 + len(rows), 1, height_ratios=[1.6] + [1.0] * len(rows))
    ax = fig.add_subplot(grid[0])
    ax.axis("off")

    def fmt(v: object) -> str:
        return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.1f}"

    def score(r: pd.Series) -> str:
        note = r.get("note")
        if isinstance(note, str) and note.startswith("needs labels"):
            return "needs labels"
        return f"{fmt(r['miou'])} ± {fmt(r['std'])}"

    cells = [[str(r["row"]), str(r["method"]), str(r["model"]), score(r),
              str(int(r["n"])), fmt(r.get("paper"))] for _, r in table.iterrows()]
    tab = ax.table(cellText=cells, colLabels=["row", "method", "model", "mIoU ± std (%)", "n", "paper (%)"],
                   loc="center", cellLoc="left", colWidths=[0.13, 0.42, 0.24, 0.10, 0.04, 0.07])
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)  # the label-free rows' methods are ~75 characters long
    tab.scale(1, 1.4)
    ax.set_title("Table 5 (val, mean ± population std over seeds / Infomap runs)", fontsize=11)
    x = np.arange(len(class_names))
    colours = [_palette_colour(i) for i in range(len(class_names))]
    for j, row in enumerate(rows):
        mean, std = (np.asarray(v, dtype=np.float64) for v in per_class[row])
        axr = fig.add_subplot(grid[1 + j])
        shown = np.nan_to_num(mean)
        axr.bar(x, shown, yerr=np.nan_to_num(std), color=colours, edgecolor="0.3", linewidth=0.5,
                capsize=2)
        for i in np.flatnonzero(np.isnan(mean)):
            axr.text(i, 1, "absent", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
        miou = table.loc[table["row"] == row, "miou"].iloc[0]
        axr.set_title(f"{row}: per-class IoU (mIoU {fmt(miou)} %)", fontsize=10, loc="left")
        axr.set_ylim(0, 100)
        axr.set_ylabel("IoU (%)")
        axr.set_xticks(x, class_names, rotation=35 if len(class_names) > 8 else 0, ha="right"
                       if len(class_names) > 8 else "center", fontsize=8)
        axr.grid(axis="y", alpha=0.3)
    return fig


# ---- qualitative grid ----------------------------------------------------------------------
def qualitative_grid(
    images: Sequence[np.ndarray],
    names: Sequence[str],
    columns: Mapping[str, Sequence[np.ndarray]],
    class_names: Sequence[str],
    foreground_columns: Sequence[str] = (),
) -> Figure:
    """One line per image: the image, then one panel per entry of ``columns`` in the VOC palette.

    Args:
        images: ``n`` RGB images ``(H_i, W_i, 3)`` uint8.
        names: ``n`` image names (line titles).
        columns: column title -> ``n`` id maps ``(H_i, W_i)`` (class ids; 255 = ignore).
        class_names: names of the class ids, for the legend (classes present in the grid).
        foreground_columns: columns whose ids are 0 = background / 1 = foreground, drawn black and
            white (legend entry "foreground" instead of a class name).
    """
    titles = ["image", *columns]
    n = len(images)
    fig, axes = plt.subplots(n, len(titles), figsize=(1.9 * len(titles), 1.9 * n + 0.9),
                             squeeze=False, layout="constrained")
    present: set[int] = set()
    fg_present = False
    for i in range(n):
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_ylabel(names[i], fontsize=8)
        for j, title in enumerate(columns, start=1):
            ids = np.asarray(columns[title][i])
            if title in foreground_columns:
                axes[i, j].imshow(np.where(ids[..., None] == 1, FOREGROUND_RGB, 0).astype(np.uint8),
                                  interpolation="nearest")
                fg_present = fg_present or bool((ids == 1).any())
            else:
                axes[i, j].imshow(colourise(ids), interpolation="nearest")
                present.update(int(v) for v in np.unique(ids))
    for j, title in enumerate(titles):
        axes[0, j].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    ids = sorted(present)
    names_ext = [*class_names, *([""] * max(0, 256 - len(class_names)))]
    names_ext[255] = "ignore"
    handles = _legend_handles(ids, names_ext)
    if fg_present:
        handles.append(Patch(facecolor=np.asarray(FOREGROUND_RGB) / 255.0, edgecolor="0.3",
                             label="foreground (CBFE mask)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(8, max(1, len(handles))), fontsize=8,
               frameon=False)
    return fig


# ---- CBFE ------------------------------------------------------------------------------------
def cbfe_figure(clusters: pd.DataFrame, record: Mapping[str, object]) -> Figure:
    """Left: train cluster precisions sorted ascending (foreground clusters highlighted) with the
    chosen threshold; right: the mean per-image foreground IoU of every cut tried.

    Args:
        clusters: ``clusters.parquet`` of the CBFE stage (columns prec_train, fg_train).
        record: ``threshold.json`` (threshold; with the search: cuts, cut_scores, best_cut).
    """
    prec = clusters["prec_train"].to_numpy(dtype=np.float64)
    fg = clusters["fg_train"].to_numpy(dtype=bool)
    order = np.argsort(np.where(np.isnan(prec), -np.inf, prec), kind="stable")
    threshold = float(record["threshold"])  # type: ignore[arg-type]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    ranks = np.arange(prec.size)
    ax0.bar(ranks, np.nan_to_num(prec[order]), width=1.0,
            color=np.where(fg[order], "#c0392b", "#7f8c8d"), edgecolor="none")
    ax0.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    if record.get("searched"):
        ax0.axvline(float(record["best_cut"]) - 0.5, color="#2980b9", lw=1,  # type: ignore[arg-type]
                    label=f"best cut (rank {record['best_cut']}, precision "
                          f"{float(record['raw_threshold']):.3f})")  # type: ignore[arg-type]
    ax0.set_xlabel("cluster rank by train precision")
    ax0.set_ylabel("attention precision (train)")
    ax0.set_title(f"{int(fg.sum())} of {prec.size} clusters foreground (red)", fontsize=10)
    ax0.legend(fontsize=8, loc="upper left")
    ax0.set_ylim(0, 1)
    if record.get("searched"):
        cuts = np.asarray(record["cuts"], dtype=np.int64)
        scores = np.asarray(record["cut_scores"], dtype=np.float64)
        ax1.plot(cuts, scores, "o-", ms=3, color="#2980b9")
        best = int(record["best_cut"])  # type: ignore[arg-type]
        ax1.plot([best], [scores[cuts == best][0]] if (cuts == best).any() else [np.nan], "*", ms=14,
                 color="#c0392b", label=f"chosen: cut {best} -> threshold {threshold:.2f}")
        ax1.xaxis.get_major_locator().set_params(integer=True)
        ax1.set_xlabel("cut (clusters of rank >= cut are foreground)")
        ax1.set_ylabel(str(record.get("score_name", "mean per-image fg IoU (train)")))
        ax1.legend(fontsize=8)
        ax1.set_title(f"threshold search on train ({record.get('selected_by', 'train ground truth')})", fontsize=9)
    else:
        ax1.axis("off")
        ax1.text(0.5, 0.5, f"fixed threshold {threshold:.2f}\n(cbfe.threshold; no search)", ha="center",
                 va="center")
    return fig


# ---- co-occurrence graph -------------------------------------------------------------------
def spring_layout(
    n: int, edges: np.ndarray, weights: np.ndarray, seed: int = 0, iterations: int = 200
) -> np.ndarray:
    """Fruchterman–Reingold positions ``(n, 2)`` in ``[-1, 1]²`` (numpy, deterministic per seed).

    Args:
        n: number of nodes.
        edges: ``(E, 2)`` node index pairs.
        weights: ``(E,)`` positive edge weights (attraction scales with the weight).
    """
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-1, 1, size=(n, 2))
    if n <= 1:
        return np.zeros((n, 2))
    k = 1.0 / np.sqrt(n)
    adj = np.zeros((n, n))
    if len(edges):
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.max()
        adj[edges[:, 0], edges[:, 1]] = w
        adj[edges[:, 1], edges[:, 0]] = w
    temperature = 0.1
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=-1), 1e-3)
        force = (k * k / dist**2 - adj * dist / k)[..., None] * delta
        disp = force.sum(axis=1)
        length = np.maximum(np.linalg.norm(disp, axis=1, keepdims=True), 1e-9)
        pos += disp / length * np.minimum(length, temperature)
        temperature = max(temperature * 0.98, 0.005)
    pos -= pos.mean(axis=0)
    return pos / max(np.abs(pos).max(), 1e-9)


def cd_graph_figure(
    edges: pd.DataFrame,
    module_of: np.ndarray,
    module_class: Mapping[int, str],
    background_label: int,
    title: str,
    seed: int = 0,
) -> Figure:
    """The co-occurrence graph: nodes = overclustering labels coloured by Infomap module.

    Args:
        edges: ``edges.parquet`` (source, target, weight).
        module_of: ``(L,)`` module of each label (0 = isolated: grey).
        module_class: module -> the class it was matched to (legend).
        background_label: the CBFE background label (drawn as a square).
        title: figure title (run, modules, codelength).
    """
    n = int(module_of.size)
    e = edges[["source", "target"]].to_numpy(dtype=np.int64) if len(edges) else np.zeros((0, 2), np.int64)
    w = edges["weight"].to_numpy(dtype=np.float64) if len(edges) else np.zeros(0)
    pos = spring_layout(n, e, w, seed=seed)
    fig, ax = plt.subplots(figsize=(10, 8), layout="constrained")
    if len(e):
        widths = 0.5 + 4.0 * w / w.max()
        for (a, b), lw in zip(e, widths, strict=True):
            ax.plot(*pos[[a, b]].T, color="0.6", lw=lw, alpha=0.6, zorder=1)
    cmap = plt.get_cmap("tab20")
    modules = sorted(int(m) for m in np.unique(module_of))
    colour = {m: (ISOLATED_COLOUR if m == 0 else cmap((i - (0 in modules)) % 20)) for i, m in enumerate(modules)}
    size = float(np.clip(8000.0 / max(n, 1), 60.0, 420.0))  # PVOC's 150 labels stay apart
    for node in range(n):
        m = int(module_of[node])
        ax.scatter(*pos[node], s=size, color=colour[m], edgecolor="k", linewidth=0.8, zorder=2,
                   marker="s" if node == background_label else "o")
        ax.text(*pos[node], "bg" if node == background_label else str(node), ha="center", va="center",
                fontsize=7 if n <= 60 else 4.5, zorder=3)
    handles = [Patch(facecolor=colour[m], edgecolor="k",
                     label="isolated (module 0)" if m == 0 else f"module {m} -> {module_class.get(m, '?')}")
               for m in modules]
    # a figure legend "outside": constrained layout makes room for it (an axes legend anchored
    # outside the equal-aspect axes was clipped at the right edge)
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


# ---- stage times and memory ----------------------------------------------------------------
def resources_figure(bench: pd.DataFrame) -> Figure:
    """Per rule: total wall time (s) and peak resident memory (MB) over its jobs.

    Args:
        bench: one row per job: rule, seconds, max_rss_mb.
    """
    per_rule = bench.groupby("rule").agg(seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max"),
                                         jobs=("seconds", "size")).sort_values("seconds")
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 0.8 + 0.32 * len(per_rule)), sharey=True,
                                   layout="constrained")
    y = np.arange(len(per_rule))
    ax0.barh(y, per_rule["seconds"], color="#2980b9")
    ax0.set_yticks(y, [f"{r} ({j})" for r, j in zip(per_rule.index, per_rule["jobs"], strict=True)],
                   fontsize=8)
    ax0.set_xlabel("wall time, all jobs (s)")
    ax0.set_title(f"stage times (total {bench['seconds'].sum():.0f} s; (n) = jobs)", fontsize=10)
    ax1.barh(y, per_rule["max_rss_mb"].fillna(0), color="#8e44ad")
    ax1.set_xlabel("peak resident memory of a job (MB)")
    ax1.set_title("peak memory", fontsize=10)
    for ax in (ax0, ax1):
        ax.grid(axis="x", alpha=0.3)
    return fig

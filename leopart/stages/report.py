"""Stages of ``workflow/rules/report.smk``: segmentation folders and the report's figures/tables.

Every stage takes a :class:`~leopart.stages.runner.StageCall`; figures are written as PNG
(atomically), tables as CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from leopart.data.dataset import read_manifest
from leopart.data.masks import load_mask
from leopart.errors import LeopartError
from leopart.io import atomic_path, load_npy, read_json, read_parquet, sidecar_path, write_json, write_text
from leopart.report import figures
from leopart.report.segmentations import image_sizes, write_segmentations
from leopart.stages.runner import Sidecars, StageCall

log = logging.getLogger(__name__)


def save_figure(fig: Any, path: str, dpi: int = 110) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def _first(paths: Any) -> str:
    return str(paths if isinstance(paths, str) else paths[0])


def row_mapping(metrics: Mapping[str, Any], run: int = 0) -> list[int]:
    """The label -> class mapping of a metric record (run ``run`` of a +CD record)."""
    if "runs" in metrics:
        runs = metrics["runs"]
        if not 0 <= run < len(runs):
            raise LeopartError(f"run {run} is not among the {len(runs)} Infomap runs of the metrics")
        metrics = runs[run]
    if "mapping" not in metrics:
        raise LeopartError("metric record has no 'mapping' (label -> class)")
    return [int(v) for v in metrics["mapping"]]


# ---- segmentations -------------------------------------------------------------------------
def segmentations(call: StageCall) -> Sidecars:
    """One row's segmentation folder (see :mod:`leopart.report.segmentations`).

    Input ``labels``: ``(N, h, w)`` (or ``(runs, N, h, w)``: run ``params.run`` is written);
    ``metrics`` (optional): the row's metric JSON, whose ``mapping`` turns labels into class ids;
    ``manifest``: the val manifest (names, image and mask paths; N may be a prefix of it).
    """
    p = call.params
    labels = load_npy(call.input["labels"], dtype_kind="iu", what="label map")
    run = int(p.get("run", 0))
    if labels.ndim == 4:
        labels = labels[run]
    if labels.ndim != 3:
        raise LeopartError(f"{call.input['labels']}: label map must be (N, h, w), got shape {labels.shape}")
    mapping = None
    if call.input.get("metrics"):
        mapping = row_mapping(read_json(call.input["metrics"], "metrics file"), run)
    index = read_manifest(call.input["manifest"])
    n = labels.shape[0]
    if n > len(index):
        raise LeopartError(f"{call.input['labels']}: {n} label maps but the manifest lists {len(index)} images")
    names = index.names[:n]
    images = [str(x) for x in index.image_paths[:n]] if index.image_paths is not None else None
    sizes = image_sizes(images if images is not None else [str(x) for x in index.mask_paths[:n]])
    summary = write_segmentations(call.output["folder"], np.asarray(labels), names, sizes, mapping=mapping,
                                  images=images, overlays=int(p["overlays"]), desc=str(p["row"]))
    ids = "class" if mapping is not None else str(p.get("ids", "label"))
    class_names = list(p["class_names"])
    record = {
        "row": p["row"], "ids": ids, "class_names": class_names if ids == "class" else None,
        "mapping": mapping, "run": run if labels.ndim == 3 else None,
        "upsampling": "torch legacy nearest from the token grid to each image's (H, W)",
        **summary,
    }
    write_json(Path(call.output["folder"]) / "segmentation.json", record)
    log.info("%s: %d palette PNGs (%s ids %s), %d overlays", p["row"], n, ids, summary["ids_present"],
             len(summary["overlays"]))
    return {"folder": {"row": p["row"], "images": n}}


# ---- Table 5 -------------------------------------------------------------------------------
def per_class_iou(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std ``(C,)`` of the per-class IoU (%) over metric records (every
    Infomap run of a +CD record); NaN where a class is absent from the ground truth."""
    vectors = []
    for rec in records:
        for r in rec.get("runs", [rec]):
            vectors.append(np.asarray(r["iou_per_class"], dtype=np.float64))
    stack = np.stack(vectors)
    with np.errstate(invalid="ignore"), _quiet_nan():
        return np.nanmean(stack, axis=0), np.nanstd(stack, axis=0)


class _quiet_nan:
    """Silence numpy's 'mean of empty slice' for all-NaN columns (absent classes stay NaN)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def report_table(call: StageCall) -> Sidecars:
    """Table 5 with a per-class IoU panel per row (PNG), the table's CSV copy and the per-class CSV."""
    table = pd.read_csv(call.input["table"])
    class_names = list(call.params["class_names"])
    per_class = {}
    lines = []
    for row, name in call.params["rows"]:
        if name not in call.input:
            continue
        paths = call.input[name]
        records = [read_json(path, "metrics file") for path in ([paths] if isinstance(paths, str) else paths)]
        mean, std = per_class_iou(records)
        if mean.size != len(class_names):
            raise LeopartError(f"{_first(paths)}: {mean.size} per-class IoUs for {len(class_names)} classes")
        per_class[row] = (mean, std)
        lines.append(pd.DataFrame({"row": row, "class": class_names, "iou": mean, "iou_std": std,
                                   "n": len(records)}))
    save_figure(figures.table_figure(table, per_class, class_names), call.output["figure"])
    write_text(call.output["table"], table.to_csv(index=False, float_format="%.2f"))
    per_class_table = (pd.concat(lines, ignore_index=True) if lines
                       else pd.DataFrame(columns=["row", "class", "iou", "iou_std", "n"]))
    write_text(call.output["per_class"], per_class_table.to_csv(index=False, float_format="%.2f"))
    return {}


# ---- qualitative grid ----------------------------------------------------------------------
def _read_ids(folder: str, name: str) -> np.ndarray:
    path = Path(folder) / f"{name}.png"
    if not path.is_file():
        raise LeopartError(f"{path}: segmentation PNG is missing")
    with Image.open(path) as im:
        return np.asarray(im)


def report_qualitative(call: StageCall) -> Sidecars:
    """Image | ground truth (when the dataset has masks) | every row's segmentation, for the val
    images of report.images."""
    p = call.params
    index = read_manifest(call.input["manifest"])
    wanted = [int(i) for i in p["images"]]
    bad = [i for i in wanted if i >= len(index)]
    if bad:
        raise LeopartError(f"report.images: indices {bad} are past the {len(index)} val images")
    num_classes = len(p["class_names"])
    names = [index.names[i] for i in wanted]
    imgs = []
    if index.image_paths is not None:
        for i in wanted:
            with Image.open(index.image_paths[i]) as im:
                imgs.append(np.asarray(im.convert("RGB")))
    columns: dict[str, list[np.ndarray]] = {}
    if index.mask_paths is not None:
        gts = [load_mask(index.mask_paths[i], num_classes, int(p.get("background_class", 0)),
                         int(p.get("ignore_index", 255))) for i in wanted]
        columns["ground truth"] = gts
        if index.image_paths is None:
            imgs = [np.full((*g.shape, 3), 255, np.uint8) for g in gts]
    for title, key in p["columns"]:
        if index.mask_paths is None and key == "upper_bound":
            # no masks (label-free folder): no ground-truth column, and the upper bound's
            # many-to-one matching is impossible, so its column shows the K=cd.k clusters as they are
            title = "overclustering (unmatched)"
        columns[title] = [_read_ids(call.input[key], n) for n in names]
    fg_cols = [title for title, key in p["columns"] if key in p.get("foreground", [])]
    fig = figures.qualitative_grid(imgs, names, columns, list(p["class_names"]), foreground_columns=fg_cols)
    save_figure(fig, call.output["figure"], dpi=100)
    return {}


# ---- CBFE ----------------------------------------------------------------------------------
def report_cbfe(call: StageCall) -> Sidecars:
    """The CBFE picture: sorted train precisions, cut scores and the chosen threshold."""
    clusters = read_parquet(call.input["clusters"], what="CBFE cluster table")
    record = read_json(call.input["threshold"], "CBFE threshold record")
    save_figure(figures.cbfe_figure(clusters, record), call.output["figure"])
    return {}


# ---- community detection -------------------------------------------------------------------
def report_cd(call: StageCall) -> Sidecars:
    """Co-occurrence graph coloured by the first Infomap run's modules; per-run table (CSV)."""
    edges = read_parquet(call.input["edges"], what="edge list")
    comms = read_parquet(call.input["communities"], what="communities")
    runs = read_parquet(call.input["runs"], what="Infomap runs")
    metrics = read_json(call.input["metrics"], "metrics file")
    class_names = list(call.params["class_names"])
    seeds = sorted(comms["seed"].unique().tolist())
    seed = seeds[0]
    part = comms[comms["seed"] == seed].sort_values("node")
    module_of = part["module"].to_numpy(dtype=np.int64)
    run_rec = next((r for r in metrics["runs"] if int(r["seed"]) == int(seed)), metrics["runs"][0])
    mapping = run_rec["mapping"]
    module_class = {m: class_names[mapping[m]] for m in range(len(mapping)) if mapping[m] < len(class_names)}
    stats = runs[runs["seed"] == seed].iloc[0]
    title = (f"co-occurrence graph (labels of the K={module_of.size - 1} + bg overclustering)\n"
             f"Infomap seed {seed}: {int(stats['num_modules'])} modules, {int(stats['isolated_nodes'])} "
             f"isolated, codelength {float(stats['codelength']):.3f}; run mIoU {run_rec['miou']:.1f} %")
    fig = figures.cd_graph_figure(edges, module_of, module_class, module_of.size - 1, title)
    save_figure(fig, call.output["figure"])
    miou = {int(r["seed"]): float(r["miou"]) for r in metrics["runs"]}
    table = runs.rename(columns={"num_modules": "modules", "isolated_nodes": "isolated_labels"})
    table["miou"] = [miou.get(int(s), np.nan) for s in table["seed"]]
    keep = [c for c in ("seed", "modules", "isolated_labels", "codelength", "miou", "markov_time",
                        "infomap_version") if c in table.columns]
    write_text(call.output["runs"], table[keep].to_csv(index=False, float_format="%.4g"))
    return {}


# ---- stage times and memory ----------------------------------------------------------------
def _number(row: pd.Series, key: str) -> float:
    """``row[key]`` as a float; NaN when missing or not a number (Snakemake writes '-')."""
    return float(pd.to_numeric(row.get(key), errors="coerce"))


def read_benchmarks(folder: str | Path) -> pd.DataFrame:
    """Every Snakemake benchmark file ``<folder>/<rule>/<job>.tsv`` as one row per job (first
    repeat): rule, job, seconds, max_rss_mb, cpu_time_s."""
    rows = []
    for path in sorted(Path(folder).glob("*/*.tsv")):
        try:
            tsv = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
            log.warning("%s: unreadable benchmark file, skipped", path)
            continue
        if tsv.empty or "s" not in tsv.columns:
            continue
        first = tsv.iloc[0]
        rows.append({"rule": path.parent.name, "job": path.stem, "seconds": _number(first, "s"),
                     "max_rss_mb": _number(first, "max_rss"), "cpu_time_s": _number(first, "cpu_time")})
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb", "cpu_time_s"])


def report_resources(call: StageCall) -> Sidecars:
    """Stage times and peak memory from the run's benchmark files (figure + CSV)."""
    bench = read_benchmarks(call.params["benchmarks"])
    if bench.empty:
        raise LeopartError(f"{call.params['benchmarks']}: no benchmark files (run the pipeline first)")
    save_figure(figures.resources_figure(bench), call.output["figure"])
    write_text(call.output["table"], bench.to_csv(index=False, float_format="%.3f"))
    return {}


# ---- provenance ----------------------------------------------------------------------------
def _flatten(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(node, Mapping):
        out: list[tuple[str, str]] = []
        for key in sorted(node):
            out.extend(_flatten(node[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, str(node))]


def report_provenance(call: StageCall) -> Sidecars:
    """One CSV (section, key, value): code and library versions and the checksums of the metric
    artefacts behind Table 5 (from the table's provenance sidecar), then the completed config."""
    table = call.input["table"]
    record = read_json(sidecar_path(table), "Table 5 sidecar")
    code = record.get("code_version")
    rows = [("code", k, str(v)) for k, v in _flatten(code if isinstance(code, Mapping) else {"version": code})]
    rows += [("version", k, str(v)) for k, v in sorted((record.get("versions") or {}).items())]
    for name, info in sorted((record.get("inputs") or {}).items()):
        for item in info if isinstance(info, list) else [info]:
            if item:
                rows.append(("artefact", f"{name}: {item.get('path')}",
                             f"sha256 {item.get('sha256') or 'not computed'}, {item.get('bytes', '?')} bytes"))
    rows += [("config", k, v) for k, v in _flatten(call.params["config"])]
    write_text(call.output["table"], pd.DataFrame(rows, columns=["section", "key", "value"]).to_csv(index=False))
    return {}

"""Table 5 aggregation: one row per line of the paper's table, its spread over every random source,
and paired comparisons of consecutive rows.

Every metric value carries the seeds it was made with (its *keys*): ``kmeans_seed`` (the k-means of
rows DINO/+Leopart and of the +CBFE foreground clustering), ``cbfe_seed`` (the K=cbfe.k clustering
behind CBFE), ``cd_seed`` (the K=cd.k overclustering) and ``infomap_seed`` (one Infomap run, read
from the ``runs`` of a CD metrics file). A row's *levels* order its keys from the outermost
clustering to the innermost seed.

Columns of ``table5.csv``: ``row`` (paper's row name), ``method`` (what was computed, with K),
``model`` (label of the backbone), ``miou`` (mean over all values, %), ``std`` (population std over
all values, %), ``n`` (number of values), ``classes`` (ground-truth classes present in val, the
ones the mIoU averages over), ``paper`` (the paper's value, %, only for PASCAL VOC 2012 itself:
``dataset.kind: pvoc`` with ``dataset.pvoc.voc2012: true``), ``source`` (artefact(s) the number
comes from), ``note`` (empty, or why a figure is missing: e.g. val ground truth all 255),
``seeds`` (how many seeds of each level, e.g. ``cbfe_seed 5 × cd_seed 5 × infomap_seed 10``).

The JSON sidecar (:func:`sidecar_record`) holds per row the decomposition of the spread — for each
grouping by the outer levels, the std of the group means (*between* clusterings) and the mean of
the within-group stds (*within* a clustering) with every group's mean/std/n — and the paired
comparisons (:func:`paired_comparison`), which ``comparisons.csv`` lists compactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leopart.errors import LeopartError
from leopart.io import read_json

#: Table 5 of the paper (PVOC 2012 val, ViT-S/16), mIoU in %.
PAPER_TABLE5 = {"DINO": 4.6, "+ Leopart": 18.9, "+ CBFE": 36.6, "+ CD": 41.7, "upper bound": 48.8}

COLUMNS = ["row", "method", "model", "miou", "std", "n", "classes", "paper", "source", "note", "seeds"]

#: ``note`` of a row whose ground truth has no valid pixel.
ALL_IGNORE_NOTE = "no valid ground-truth pixel (all 255): nothing to score"
#: ``note`` of every row of a dataset without masks (label-free run: no number, no paper value).
NEEDS_LABELS_NOTE = "needs labels: the dataset has no masks (segmentations only)"
#: Suffix of the rows whose CBFE threshold and CD setting are chosen without labels.
LABEL_FREE = "label-free"
COMPARISON_COLUMNS = ["comparison", "paired_on", "n_pairs", "mean_diff", "std_diff", "ci95_low",
                      "ci95_high", "frac_positive"]

#: Resamples and seed of the paired bootstrap.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class RowSpec:
    """One table row: ``input`` names its metric files (``inputs[input]``, seeds ``seeds[input]``),
    ``levels`` its keys from outer to inner, ``paper_row`` the paper's row it reproduces,
    ``model`` the family of its backbone label (``dino`` or ``leopart``). A CD metrics file holds
    its Infomap runs, which add the innermost level ``infomap_seed``."""

    row: str
    input: str
    method: str
    levels: tuple[str, ...]
    model: str = "leopart"
    paper_row: str | None = None


@dataclass(frozen=True)
class ComparisonSpec:
    """Row ``a`` minus row ``b``, paired on the seeds ``on`` (the clusterings both rows share); the
    other levels of each row are averaged within a pair."""

    a: str
    b: str
    on: tuple[str, ...]


def cd_row_name(variant: str | None = None) -> str:
    """Name of a +CD row: ``+ CD``, or ``+ CD (<variant>)`` for another variant (e.g. an Infomap
    behaviour) reported beside it."""
    return "+ CD" if variant is None else f"+ CD ({variant})"


def cbfe_row_name(variant: str | None = None) -> str:
    """Name of a +CBFE row: ``+ CBFE``, or ``+ CBFE (<variant>)`` (e.g. the label-free threshold)."""
    return "+ CBFE" if variant is None else f"+ CBFE ({variant})"


def _is_label_free(row: str) -> bool:
    """Whether a row's choices were made without labels (its name ends in ``(label-free)``)."""
    return row.endswith(f"({LABEL_FREE})")


def _paper_row(row: str, paper_row: str) -> str | None:
    """The paper's row a variant reproduces; none for a label-free row (the paper chose with labels)."""
    return None if _is_label_free(row) else paper_row


def _chosen(row: str, how: str) -> str:
    """Method text of a label-free row: how its choice was made (label-free rows only)."""
    return f" ({how}, no labels)" if _is_label_free(row) else ""


def table_rows(k_overcluster: int, k_fg: int, k_cd: int, cd_rows: Sequence[tuple[str, str]] = (("+ CD", "cd"),),
               cbfe_rows: Sequence[tuple[str, str]] = (("+ CBFE", "cbfe"),)) -> list[RowSpec]:
    """The rows of Table 5. ``cd_rows``: (row name, input name) of every +CD variant (e.g. one per
    Infomap behaviour); each is scored like the paper's +CD row. ``cbfe_rows`` likewise for +CBFE
    (e.g. the label-free threshold beside the paper's)."""
    rows = [
        RowSpec("DINO", "dino", f"k-means K={k_overcluster}, Hungarian", ("kmeans_seed",), "dino"),
        RowSpec("+ Leopart", "leopart", f"k-means K={k_overcluster}, Hungarian", ("kmeans_seed",)),
    ]
    rows += [RowSpec(name, inp, f"CBFE{_chosen(name, 'Otsu threshold')} + fg k-means K={k_fg}+1 bg, Hungarian",
                     ("cbfe_seed", "kmeans_seed"), paper_row=_paper_row(name, "+ CBFE")) for name, inp in cbfe_rows]
    rows += [RowSpec(name, inp, f"K={k_cd}+1 co-occurrence + Infomap{_chosen(name, 'modularity setting')}, Hungarian",
                     ("cbfe_seed", "cd_seed", "infomap_seed"), paper_row=_paper_row(name, "+ CD"))
             for name, inp in cd_rows]
    rows.append(RowSpec("upper bound", "upper_bound", f"K={k_cd + 1} many-to-one with GT", ("cbfe_seed", "cd_seed")))
    return rows


def table_comparisons(cd_rows: Sequence[str] = ("+ CD",), cbfe_rows: Sequence[str] = ("+ CBFE",)
                      ) -> list[ComparisonSpec]:
    """Each step of the table against the row before it, paired on their shared seeds; every
    further +CBFE variant against the first (``cbfe_rows[0]``), paired on both clusterings; every
    further +CD variant (e.g. the other Infomap behaviour, the label-free setting) also against the
    first, paired on the clustering (graph) both ran on."""
    base = cbfe_rows[0]
    comps = [
        ComparisonSpec("+ Leopart", "DINO", ("kmeans_seed",)),
        ComparisonSpec(base, "+ Leopart", ("kmeans_seed",)),
    ]
    comps += [ComparisonSpec(name, base, ("cbfe_seed", "kmeans_seed")) for name in cbfe_rows[1:]]
    comps += [ComparisonSpec(cd, base, ("cbfe_seed",)) for cd in cd_rows]
    comps += [ComparisonSpec("upper bound", cd, ("cbfe_seed", "cd_seed")) for cd in cd_rows]
    comps += [ComparisonSpec(cd, cd_rows[0], ("cbfe_seed", "cd_seed")) for cd in cd_rows[1:]]
    return comps


def load_samples(paths: Sequence[str], seeds: Sequence[Mapping[str, int]], infomap_runs: bool = False
                 ) -> pd.DataFrame:
    """One line per metric value: its seed columns and ``miou`` (%). ``seeds[i]`` are the seeds of
    ``paths[i]``; with ``infomap_runs`` every file holds ``runs`` (one per Infomap seed)."""
    if len(paths) != len(seeds):
        raise LeopartError(f"table: {len(paths)} metric files but {len(seeds)} seed records")
    records = []
    for path, keys in zip(paths, seeds, strict=True):
        metrics = read_json(path, "metrics file")
        if infomap_runs:
            if "runs" not in metrics:
                raise LeopartError(f"{path}: CD metrics file without 'runs'")
            records += [{**keys, "infomap_seed": int(r["seed"]), "miou": float(r["miou"])} for r in metrics["runs"]]
        else:
            records.append({**keys, "miou": float(metrics["miou"])})
    return pd.DataFrame.from_records(records)


def _stats(values: np.ndarray) -> dict[str, Any]:
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


def decompose(samples: pd.DataFrame, levels: Sequence[str]) -> dict[str, Any]:
    """Mean, population std and n over all values, and the spread per grouping by outer levels.

    For each ``levels[:i]`` (i = 1 .. len(levels) - 1): the groups' mean/std/n, ``between_std`` =
    std of the group means (spread between clusterings) and ``within_std`` = mean of the groups'
    stds (spread within a clustering, from the inner seeds).
    """
    miou = samples["miou"].to_numpy(dtype=np.float64)
    out: dict[str, Any] = {**_stats(miou), "levels": list(levels),
                           "counts": {lv: int(samples[lv].nunique()) for lv in levels}, "groupings": []}
    for i in range(1, len(levels)):
        by = list(levels[:i])
        grouped = samples.groupby(by, sort=True)["miou"]
        groups = [{**dict(zip(by, (int(v) for v in (key if isinstance(key, tuple) else (key,))), strict=True)),
                   **_stats(vals.to_numpy(dtype=np.float64))} for key, vals in grouped]
        means = np.array([g["mean"] for g in groups])
        stds = np.array([g["std"] for g in groups])
        out["groupings"].append({"by": by, "between_std": float(means.std()), "within_std": float(stds.mean()),
                                 "groups": groups})
    return out


def paired_bootstrap(diffs: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` (one difference per pair) under resampling of
    the pairs with replacement; seeded, so the same inputs give the same interval."""
    diffs = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame, on: Sequence[str]) -> dict[str, Any]:
    """``a - b`` per shared value of the seeds ``on`` (each side averaged over its other seeds).

    Returns n_pairs, mean_diff, std_diff (population), the paired bootstrap 95 % interval of the
    mean difference (ci95_low/high), frac_positive (share of pairs with a - b > 0) and the pairs.
    """
    on = list(on)
    missing = [k for k in on if k not in a.columns or k not in b.columns]
    if missing:
        raise LeopartError(f"table: comparison on seeds {missing} that a row does not have")
    pairs = (a.groupby(on)["miou"].mean().rename("a").to_frame()
             .join(b.groupby(on)["miou"].mean().rename("b"), how="inner").reset_index())
    if pairs.empty:
        return {"paired_on": on, "n_pairs": 0, "mean_diff": float("nan"), "std_diff": float("nan"),
                "ci95_low": float("nan"), "ci95_high": float("nan"), "frac_positive": float("nan"), "pairs": []}
    diffs = (pairs["a"] - pairs["b"]).to_numpy(dtype=np.float64)
    low, high = paired_bootstrap(diffs)
    return {
        "paired_on": on, "n_pairs": int(diffs.size), "mean_diff": float(diffs.mean()),
        "std_diff": float(diffs.std()), "ci95_low": low, "ci95_high": high,
        "frac_positive": float((diffs > 0).mean()),
        "pairs": [{**{k: int(r[k]) for k in on}, "a": float(r["a"]), "b": float(r["b"]),
                   "diff": float(r["a"] - r["b"])} for _, r in pairs.iterrows()],
    }


def _classes(record: Mapping[str, Any]) -> int:
    """GT classes present in a metrics record (a CD record: its first run); -1 if not recorded."""
    if "classes" in record:
        return int(record["classes"])
    runs = record.get("runs") or [{}]
    return int(runs[0].get("classes", -1))


def _source(paths: Sequence[str]) -> str:
    if len(paths) == 1:
        return str(paths[0])
    common = Path(paths[0]).parent
    while not all(Path(p).is_relative_to(common) for p in paths):
        common = common.parent
    return str(common)


@dataclass
class Table:
    """Table 5 (``table``), its comparisons (``comparisons``) and the sidecar record (``record``)."""

    table: pd.DataFrame
    comparisons: pd.DataFrame
    record: dict[str, Any]


def build_table(
    inputs: Mapping[str, Sequence[str]],
    seeds: Mapping[str, Sequence[Mapping[str, int]]],
    labels: Mapping[str, str],
    dataset: str,
    rows: Sequence[RowSpec],
    comparisons: Sequence[ComparisonSpec],
    voc2012: bool = False,
    has_labels: bool = True,
) -> Table:
    """Assemble Table 5 from the metric artefacts.

    Args:
        inputs: metric JSON files per input name (see :class:`RowSpec`).
        seeds: the seeds of each of those files, same order.
        labels: backbone label per row family (``dino``, ``leopart``).
        dataset: dataset kind; paper values are shown for ``pvoc`` with ``voc2012`` only.
        rows, comparisons: from :func:`table_rows` and :func:`table_comparisons`.
        voc2012: the dataset is PASCAL VOC 2012 itself (``dataset.pvoc.voc2012``).
        has_labels: False for a dataset without masks: every row's note says it needs labels
            (its ``miou`` is NaN, from all-ignore ground truth).
    """
    lines, row_records, samples = [], {}, {}
    for spec in rows:
        paths = [str(p) for p in ([inputs[spec.input]] if isinstance(inputs[spec.input], str) else inputs[spec.input])]
        data = load_samples(paths, seeds[spec.input], infomap_runs="infomap_seed" in spec.levels)
        samples[spec.row] = data
        stats = decompose(data, spec.levels)
        paper_row = spec.paper_row or spec.row
        classes = _classes(read_json(paths[0], "metrics file"))
        lines.append({
            "row": spec.row, "method": spec.method, "model": labels[spec.model],
            "miou": round(stats["mean"], 2), "std": round(stats["std"], 2), "n": stats["n"],
            "classes": classes,
            "paper": PAPER_TABLE5.get(paper_row, float("nan")) if dataset == "pvoc" and voc2012 else float("nan"),
            "source": _source(paths),
            "note": NEEDS_LABELS_NOTE if not has_labels else ALL_IGNORE_NOTE if classes == 0 else "",
            "seeds": " × ".join(f"{lv} {stats['counts'][lv]}" for lv in spec.levels),
        })
        row_records[spec.row] = {**stats, "input": spec.input, "paper_row": paper_row,
                                 "values": data.to_dict(orient="records")}
    comp_records = []
    for comp in comparisons:
        res = paired_comparison(samples[comp.a], samples[comp.b], comp.on)
        comp_records.append({"comparison": f"{comp.a} vs {comp.b}", "a": comp.a, "b": comp.b, **res})
    comp_table = pd.DataFrame([{c: (" × ".join(r[c]) if c == "paired_on" else r[c]) for c in COMPARISON_COLUMNS}
                               for r in comp_records], columns=COMPARISON_COLUMNS)
    record = {"rows": row_records, "comparisons": comp_records,
              "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95}}
    return Table(pd.DataFrame(lines, columns=COLUMNS), comp_table, record)

"""Table 5 aggregation: one row per line of the paper's table, with its provenance.

Columns of ``table5.csv``: ``row`` (paper's row name), ``method`` (what was computed, with K),
``model`` (label of the backbone), ``miou`` (mean, %), ``std`` (population std over seeds or runs,
%), ``n`` (number of seeds or Infomap runs), ``paper`` (the paper's value, %, PVOC only),
``source`` (artefact(s) the number comes from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leopart.io import read_json

#: Table 5 of the paper (PVOC 2012 val, ViT-S/16), mIoU in %.
PAPER_TABLE5 = {"DINO": 4.6, "+ Leopart": 18.9, "+ CBFE": 36.6, "+ CD": 41.7, "upper bound": 48.8}

COLUMNS = ["row", "method", "model", "miou", "std", "n", "paper", "source"]


def _seeds_row(paths: Sequence[str]) -> tuple[float, float, int]:
    values = np.array([read_json(p, "metrics file")["miou"] for p in paths], dtype=np.float64)
    return float(values.mean()), float(values.std()), int(values.size)


def build_table(
    inputs: Mapping[str, Any],
    labels: Mapping[str, str],
    dataset: str,
    k_overcluster: int,
    k_fg: int,
    k_cd: int,
) -> pd.DataFrame:
    """Assemble Table 5 from the metric artefacts.

    Args:
        inputs: ``dino``/``leopart``/``cbfe``: lists of per-seed metric JSONs; ``cd``: the CD metric
            JSON (holds all runs); ``upper_bound``: the many-to-one metric JSON.
        labels: backbone label per row family (``dino``, ``leopart``).
        dataset: dataset kind; paper values are shown for ``pvoc`` only.
        k_overcluster, k_fg, k_cd: cluster counts for the ``method`` column.
    """
    rows = []

    def add(row: str, method: str, model: str, stats: tuple[float, float, int], source: Sequence[str]) -> None:
        mean, std, n = stats
        paper = PAPER_TABLE5[row] if dataset == "pvoc" else float("nan")
        common = str(Path(source[0]).parent) if len(source) == 1 else str(Path(source[0]).parent.parent)
        rows.append({"row": row, "method": method, "model": model, "miou": round(mean, 2),
                     "std": round(std, 2), "n": n, "paper": paper,
                     "source": source[0] if len(source) == 1 else common})

    add("DINO", f"k-means K={k_overcluster}, Hungarian", labels["dino"], _seeds_row(inputs["dino"]),
        list(inputs["dino"]))
    add("+ Leopart", f"k-means K={k_overcluster}, Hungarian", labels["leopart"],
        _seeds_row(inputs["leopart"]), list(inputs["leopart"]))
    add("+ CBFE", f"CBFE + fg k-means K={k_fg}+1 bg, Hungarian", labels["leopart"],
        _seeds_row(inputs["cbfe"]), list(inputs["cbfe"]))
    cd = read_json(inputs["cd"], "metrics file")
    add("+ CD", f"K={k_cd}+1 co-occurrence + Infomap, Hungarian", labels["leopart"],
        (cd["miou"], cd["miou_std"], cd["num_runs"]), [inputs["cd"]])
    ub = read_json(inputs["upper_bound"], "metrics file")
    add("upper bound", f"K={k_cd + 1} many-to-one with GT", labels["leopart"],
        (ub["miou"], 0.0, 1), [inputs["upper_bound"]])
    return pd.DataFrame(rows, columns=COLUMNS)

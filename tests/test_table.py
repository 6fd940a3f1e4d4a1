"""Table 5 aggregation on hand-made metric files: means, spreads, decomposition, paired comparisons."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leopart.errors import LeopartError
from leopart.stages.runner import StageCall
from leopart.stages.table_stage import table5
from leopart.table import build_table, paired_bootstrap, table_comparisons, table_rows


def _write(path: Path, record: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return str(path)


@pytest.fixture()
def metric_files(tmp_path: Path) -> tuple[dict, dict]:
    """DINO/+Leopart: 3 k-means seeds; +CBFE: 1 CBFE clustering x 2 k-means seeds; +CD: 2
    clusterings (cd seeds 0, 1 on cbfe seed 0) x 3 Infomap seeds; upper bound: those 2 clusterings."""
    inputs: dict = {"dino": [], "leopart": [], "cbfe": [], "cd": [], "upper_bound": []}
    seeds: dict = {k: [] for k in inputs}
    for s, (d, lp) in enumerate([(4.0, 10.0), (5.0, 14.0), (6.0, 12.0)]):
        inputs["dino"].append(_write(tmp_path / f"dino/s{s}/metrics.json", {"miou": d}))
        inputs["leopart"].append(_write(tmp_path / f"leopart/s{s}/metrics.json", {"miou": lp}))
        seeds["dino"].append({"kmeans_seed": s})
        seeds["leopart"].append({"kmeans_seed": s})
    for s, v in enumerate([30.0, 34.0]):
        inputs["cbfe"].append(_write(tmp_path / f"cbfe/b0/fg{s}/hungarian.json", {"miou": v}))
        seeds["cbfe"].append({"cbfe_seed": 0, "kmeans_seed": s})
    for c, (runs, ub) in enumerate([([30.0, 32.0, 34.0], 40.0), ([40.0, 40.0, 46.0], 45.0)]):
        inputs["cd"].append(_write(tmp_path / f"cbfe/b0/cd{c}/metrics.json", {
            "miou": float(np.mean(runs)), "runs": [{"seed": i + 1, "miou": v} for i, v in enumerate(runs)]}))
        inputs["upper_bound"].append(_write(tmp_path / f"cbfe/b0/cd{c}/many_to_one.json", {"miou": ub}))
        seeds["cd"].append({"cbfe_seed": 0, "cd_seed": c})
        seeds["upper_bound"].append({"cbfe_seed": 0, "cd_seed": c})
    return inputs, seeds


def _build(inputs: dict, seeds: dict, dataset: str = "toy"):
    return build_table(inputs, seeds, {"dino": "D", "leopart": "L"}, dataset, table_rows(7, 6, 29),
                       table_comparisons())


def test_rows_report_mean_std_and_n_over_every_seed(metric_files: tuple[dict, dict]) -> None:
    result = _build(*metric_files)
    t = result.table.set_index("row")
    assert list(t.index) == ["DINO", "+ Leopart", "+ CBFE", "+ CD", "upper bound"]
    # DINO 4, 5, 6: mean 5, population std sqrt(2/3)
    assert t.loc["DINO", "miou"] == 5.0 and t.loc["DINO", "std"] == round(math.sqrt(2 / 3), 2)
    # +CD over 6 values 30 32 34 40 40 46: mean 37, deviations -7 -5 -3 3 3 9 -> var 182/6
    assert t.loc["+ CD", "miou"] == 37.0 and t.loc["+ CD", "n"] == 6
    assert t.loc["+ CD", "std"] == round(math.sqrt(182 / 6), 2)
    assert t.loc["+ CD", "seeds"] == "cbfe_seed 1 × cd_seed 2 × infomap_seed 3"
    # upper bound over the two clusterings: 40, 45
    assert t.loc["upper bound", "miou"] == 42.5 and t.loc["upper bound", "std"] == 2.5
    assert t.loc["upper bound", "n"] == 2
    assert math.isnan(t.loc["DINO", "paper"])
    voc = build_table(*metric_files, {"dino": "D", "leopart": "L"}, "pvoc", table_rows(7, 6, 29),
                      table_comparisons(), voc2012=True)
    assert list(voc.table["paper"]) == [4.6, 18.9, 36.6, 41.7, 48.8]


def test_cd_spread_between_and_within_clusterings(metric_files: tuple[dict, dict]) -> None:
    cd = _build(*metric_files).record["rows"]["+ CD"]
    by_cbfe, by_clustering = cd["groupings"]
    assert by_clustering["by"] == ["cbfe_seed", "cd_seed"]
    # per clustering: 30 32 34 -> 32 ± sqrt(8/3); 40 40 46 -> 42 ± sqrt(8)
    (g0, g1) = by_clustering["groups"]
    assert (g0["cd_seed"], g0["mean"], g0["n"]) == (0, 32.0, 3)
    assert g0["std"] == pytest.approx(math.sqrt(8 / 3)) and g1["std"] == pytest.approx(math.sqrt(8))
    assert by_clustering["between_std"] == pytest.approx(5.0)  # std of 32, 42
    assert by_clustering["within_std"] == pytest.approx((math.sqrt(8 / 3) + math.sqrt(8)) / 2)
    # one CBFE clustering: nothing between, everything within
    assert by_cbfe["between_std"] == 0.0 and by_cbfe["within_std"] == pytest.approx(math.sqrt(182 / 6))
    assert len(cd["values"]) == 6 and {v["infomap_seed"] for v in cd["values"]} == {1, 2, 3}


def test_paired_comparisons_of_each_step(metric_files: tuple[dict, dict]) -> None:
    result = _build(*metric_files)
    comps = {c["comparison"]: c for c in result.record["comparisons"]}
    # +Leopart - DINO per k-means seed: 6, 9, 6
    lp = comps["+ Leopart vs DINO"]
    assert lp["n_pairs"] == 3 and lp["mean_diff"] == pytest.approx(7.0)
    assert lp["std_diff"] == pytest.approx(math.sqrt(2)) and lp["frac_positive"] == 1.0
    assert 6.0 <= lp["ci95_low"] <= lp["ci95_high"] <= 9.0
    # +CBFE - +Leopart: only k-means seeds 0 and 1 are shared: 30 - 10, 34 - 14
    cb = comps["+ CBFE vs + Leopart"]
    assert cb["n_pairs"] == 2 and cb["mean_diff"] == pytest.approx(20.0) and cb["std_diff"] == 0.0
    # +CD - +CBFE on the one shared CBFE clustering: 37 - 32
    cd = comps["+ CD vs + CBFE"]
    assert cd["n_pairs"] == 1 and cd["mean_diff"] == pytest.approx(5.0)
    assert cd["ci95_low"] == cd["ci95_high"] == pytest.approx(5.0)
    # upper bound - +CD per clustering: 40 - 32, 45 - 42 -> 8, 3; bootstrap means are 3, 5.5 or 8
    ub = comps["upper bound vs + CD"]
    assert ub["n_pairs"] == 2 and ub["mean_diff"] == pytest.approx(5.5) and ub["std_diff"] == pytest.approx(2.5)
    assert (ub["ci95_low"], ub["ci95_high"]) == pytest.approx((3.0, 8.0))
    assert [p["diff"] for p in ub["pairs"]] == [8.0, 3.0]
    assert list(result.comparisons["comparison"]) == list(comps)


def test_paired_bootstrap_sign_and_seeding() -> None:
    rng = np.random.default_rng(5)
    positive = 2.0 + rng.normal(0.0, 1.0, size=20)
    low, high = paired_bootstrap(positive)
    assert 0.0 < low < positive.mean() < high
    assert paired_bootstrap(-positive) == pytest.approx((-high, -low))
    assert paired_bootstrap(positive) == (low, high)  # seeded
    # no effect: symmetric differences, the interval holds 0
    low0, high0 = paired_bootstrap(np.array([-1.0, 1.0] * 10))
    assert low0 < 0.0 < high0


def test_second_cd_row_is_one_entry_away(metric_files: tuple[dict, dict]) -> None:
    inputs, seeds = metric_files
    inputs = {**inputs, "cd_other": inputs["cd"][:1]}
    seeds = {**seeds, "cd_other": seeds["cd"][:1]}
    cd_rows = [("+ CD", "cd"), ("+ CD (other)", "cd_other")]
    result = build_table(inputs, seeds, {"dino": "D", "leopart": "L"}, "pvoc", table_rows(7, 6, 29, cd_rows),
                         table_comparisons([r for r, _ in cd_rows]), voc2012=True)
    t = result.table.set_index("row")
    assert t.loc["+ CD (other)", "miou"] == 32.0 and t.loc["+ CD (other)", "paper"] == 41.7
    assert "upper bound vs + CD (other)" in set(result.comparisons["comparison"])


def test_stage_writes_table_comparisons_and_sidecar(metric_files: tuple[dict, dict], tmp_path: Path) -> None:
    inputs, seeds = metric_files
    out = {"table": str(tmp_path / "t" / "table5.csv"), "comparisons": str(tmp_path / "t" / "comparisons.csv")}
    call = StageCall(input=inputs, output=out, params={
        "labels": {"dino": "D", "leopart": "L"}, "dataset": "toy", "k_overcluster": 7, "k_fg": 6, "k_cd": 29,
        "seeds": seeds, "cd_rows": [["+ CD", "cd"]]})
    table5(call)
    assert pd.read_csv(out["table"])["n"].tolist() == [3, 3, 2, 6, 2]
    comps = pd.read_csv(out["comparisons"])
    assert comps.loc[comps["comparison"] == "upper bound vs + CD", "mean_diff"].item() == 5.5


def test_mismatched_seed_records_are_one_line_error(metric_files: tuple[dict, dict]) -> None:
    inputs, seeds = metric_files
    with pytest.raises(LeopartError, match="3 metric files but 2 seed records"):
        _build(inputs, {**seeds, "dino": seeds["dino"][:2]})


def test_paper_values_only_for_voc2012_and_classes_column(metric_files: tuple[dict, dict]) -> None:
    inputs, seeds = metric_files
    own = build_table(inputs, seeds, {"dino": "D", "leopart": "L"}, "pvoc", table_rows(7, 6, 29),
                      table_comparisons(), voc2012=False)
    assert own.table["paper"].isna().all()
    # metric files without a `classes` record give -1 and no note
    assert (own.table["classes"] == -1).all() and (own.table["note"] == "").all()


def test_table_of_an_all_ignore_val_split_says_so(tmp_path: Path) -> None:
    """A val split whose ground truth is all 255: mIoU NaN, classes 0 and a note, not zeros."""
    from leopart.eval.score import score
    from leopart.table import ALL_IGNORE_NOTE

    gt = np.full((2, 4, 4), 255, dtype=np.uint8)
    rec = score(np.zeros((2, 2, 2), dtype=np.int64), gt, 3, "hungarian")
    path = _write(tmp_path / "m.json", rec)
    cd = _write(tmp_path / "cd.json", {"miou": rec["miou"], "num_runs": 1, "runs": [{**rec, "seed": 1}]})
    inputs = {"dino": [path], "leopart": [path], "cbfe": [path], "cd": [cd], "upper_bound": [path]}
    seeds = {"dino": [{"kmeans_seed": 0}], "leopart": [{"kmeans_seed": 0}],
             "cbfe": [{"cbfe_seed": 0, "kmeans_seed": 0}], "cd": [{"cbfe_seed": 0, "cd_seed": 0}],
             "upper_bound": [{"cbfe_seed": 0, "cd_seed": 0}]}
    table = build_table(inputs, seeds, {"dino": "a", "leopart": "b"}, "pvoc", table_rows(3, 2, 5),
                        table_comparisons()).table
    assert table["miou"].isna().all() and (table["classes"] == 0).all()
    assert (table["note"] == ALL_IGNORE_NOTE).all()


def test_other_infomap_row_is_paired_with_cd_on_the_same_graphs(metric_files: tuple[dict, dict],
                                                                 tmp_path: Path) -> None:
    """The other behaviour's +CD on the same two clusterings: per-graph means 20 and 30 vs the +CD
    row's 32 and 42, so the paired difference is -12 on each graph (mean -12, no spread)."""
    inputs, seeds = metric_files
    other = []
    for c, runs in enumerate([[19.0, 21.0], [30.0, 30.0]]):
        other.append(_write(tmp_path / f"cbfe/b0/cd{c}_other/metrics.json", {
            "miou": float(np.mean(runs)), "runs": [{"seed": i + 1, "miou": v} for i, v in enumerate(runs)]}))
    inputs = {**inputs, "cd_other_infomap": other}
    seeds = {**seeds, "cd_other_infomap": list(seeds["cd"])}
    cd_rows = [("+ CD", "cd"), ("+ CD (infomap authors)", "cd_other_infomap")]
    result = build_table(inputs, seeds, {"dino": "D", "leopart": "L"}, "toy", table_rows(7, 6, 29, cd_rows),
                         table_comparisons([r for r, _ in cd_rows]))
    t = result.table.set_index("row")
    assert t.loc["+ CD (infomap authors)", "miou"] == pytest.approx(25.0)
    assert t.loc["+ CD (infomap authors)", "n"] == 4
    comps = result.comparisons.set_index("comparison")
    row = comps.loc["+ CD (infomap authors) vs + CD"]
    assert row["n_pairs"] == 2
    assert row["mean_diff"] == pytest.approx(-12.0)


def test_label_free_rows_beside_the_paper_rows_and_without_labels(metric_files: tuple[dict, dict],
                                                                   tmp_path: Path) -> None:
    """+ CBFE (label-free) on the same 2 k-means seeds (28, 30 vs the paper row's 30, 34): paired
    difference -2 and -4 (mean -3); label-free rows have no paper value (the paper chose with
    labels). Without masks every row says it needs labels."""
    from leopart.table import NEEDS_LABELS_NOTE

    inputs, seeds = metric_files
    lf = [_write(tmp_path / f"cbfe/b0-lf/fg{s}/hungarian.json", {"miou": v}) for s, v in enumerate([28.0, 30.0])]
    inputs = {**inputs, "cbfe_label_free": lf, "cd_label_free": inputs["cd"]}
    seeds = {**seeds, "cbfe_label_free": list(seeds["cbfe"]), "cd_label_free": list(seeds["cd"])}
    cbfe_rows = [("+ CBFE", "cbfe"), ("+ CBFE (label-free)", "cbfe_label_free")]
    cd_rows = [("+ CD", "cd"), ("+ CD (label-free)", "cd_label_free")]
    result = build_table(inputs, seeds, {"dino": "D", "leopart": "L"}, "pvoc",
                         table_rows(7, 6, 29, cd_rows, cbfe_rows),
                         table_comparisons([r for r, _ in cd_rows], [r for r, _ in cbfe_rows]), voc2012=True)
    t = result.table.set_index("row")
    assert list(t.index) == ["DINO", "+ Leopart", "+ CBFE", "+ CBFE (label-free)", "+ CD", "+ CD (label-free)",
                             "upper bound"]
    assert t.loc["+ CBFE (label-free)", "miou"] == 29.0 and "Otsu" in t.loc["+ CBFE (label-free)", "method"]
    assert t.loc["+ CBFE", "paper"] == 36.6 and math.isnan(t.loc["+ CBFE (label-free)", "paper"])
    assert math.isnan(t.loc["+ CD (label-free)", "paper"]) and t.loc["+ CD", "paper"] == 41.7
    comp = result.comparisons.set_index("comparison").loc["+ CBFE (label-free) vs + CBFE"]
    assert comp["n_pairs"] == 2 and comp["mean_diff"] == pytest.approx(-3.0)

    # no masks: the +CBFE row is the label-free one, and every row needs labels
    no_masks = build_table(inputs, seeds, {"dino": "D", "leopart": "L"}, "toy",
                           table_rows(7, 6, 29, cd_rows, [("+ CBFE (label-free)", "cbfe")]),
                           table_comparisons([r for r, _ in cd_rows], ["+ CBFE (label-free)"]), has_labels=False)
    assert (no_masks.table["note"] == NEEDS_LABELS_NOTE).all()
    assert "+ CBFE (label-free) vs + Leopart" in set(no_masks.comparisons["comparison"])

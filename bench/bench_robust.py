"""Benchmark: the robust Table 5 protocol (config/robust.yaml) on PVOC-scale inputs (not a test).

Same inputs as ``bench/bench_eval.py`` (real PVOC 2012 masks, synthetic 384-d tokens that follow
them, attention with 10 % flipped tokens). Then the pipeline's stage functions run as the workflow
runs them for ``--cbfe-seeds`` K=200 clusterings, each with 5 +CBFE k-means (K=20, Hungarian) and
``--cd-seeds`` K=149 overclusterings (upper bound, co-occurrence, edges, 10 Infomap runs, CD
scoring), plus PCA-50 and the 5 K=21 k-means of the DINO/+Leopart rows (one model here: both rows
are the same tokens). Every stage runs in a forked child (wall time and peak RSS per stage), and
:func:`leopart.table.build_table` aggregates the results as rule table5 does.

``--cbfe-seeds 1 --cd-seeds 1`` is the paper's protocol (config/pvoc.yaml); the defaults (5 and 5)
are config/robust.yaml. The last line reads ``robust total_s=<wall s> cpu_s=<CPU s of the stages>
peak_rss_mib=<MiB> stages=<count>``. Usage: ``make bench-robust`` or ``python bench/bench_robust.py [--workdir DIR]
[--reuse-inputs] [--cbfe-seeds 5] [--cd-seeds 5]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_eval import KMEANS, measure, stage_bench_parser, start_stage_bench  # noqa: E402

from leopart.stages.runner import StageCall  # noqa: E402
from leopart.table import build_table, table_comparisons, table_rows  # noqa: E402


def job(input: dict, output: dict, params: dict, wildcards: dict, threads: int = 2) -> StageCall:
    """The StageCall of one job (paths as strings, wildcards as strings), as run_stage builds it."""
    return StageCall(input={k: str(v) for k, v in input.items()}, output={k: str(v) for k, v in output.items()},
                     params=params, wildcards={k: str(v) for k, v in wildcards.items()}, threads=threads)

INFOMAP_SEEDS = list(range(1, 11))
KMEANS_SEEDS = list(range(5))


def plan(work: Path, inputs: dict[str, Any], cbfe_seeds: list[int], cd_seeds: list[int]
         ) -> tuple[list[tuple[str, Callable[[], None]]], dict[str, list], dict[str, list]]:
    """The stages in workflow order, and the metric files and seeds of every table input."""
    from leopart.stages.cbfe_stage import cbfe
    from leopart.stages.cd_stage import cd_edges, cd_score, cooccurrence, infomap
    from leopart.stages.clustering import fg_kmeans, kmeans_trainval, overcluster_kmeans, score_labels
    from leopart.stages.features import pca

    tr, va = inputs["train"], inputs["val"]
    d = work / "robust"
    stages: list[tuple[str, Callable[[], None]]] = []
    files: dict[str, list] = {k: [] for k in ("dino", "leopart", "cbfe", "cd", "upper_bound")}
    seeds: dict[str, list] = {k: [] for k in files}

    def add(name: str, fn: Callable[[Any], None], smk: StageCall) -> None:
        stages.append((name, lambda: fn(smk)))

    def score(name: str, labels: Path, out: Path, matching: str) -> None:
        add(name, score_labels, job({"labels": labels, "gt": va["gt"]}, {"metrics": out},
                                    {"num_classes": 21, "val_limit": None, "matching": matching}, {}))

    add("standardise+PCA-50 trainval", pca, job(
        {"train": tr["tokens"], "val": va["tokens"]},
        {"train": d / "pca_train.npy", "val": d / "pca_val.npy", "model": d / "pca.npz"},
        {"pca": {"dim": 50, "max_points_per_d": 1000, "seed": 1234}, "val_limit": None, "fit": "trainval"},
        {"model": "bench", "fit": "trainval"}))
    for s in KMEANS_SEEDS:
        add(f"K=21 val seed {s}", overcluster_kmeans, job(
            {"val": d / "pca_val.npy"}, {"labels": d / f"oc_{s}.npy"},
            {"kmeans": KMEANS, "val_limit": None, "spherical": False}, {"k": 21, "seed": s}))
        score(f"  score seed {s}", d / f"oc_{s}.npy", d / f"oc_{s}.json", "hungarian")
        for row in ("dino", "leopart"):
            files[row].append(str(d / f"oc_{s}.json"))
            seeds[row].append({"kmeans_seed": s})
    for b in cbfe_seeds:
        c_dir = d / f"k200_seed{b}"
        add(f"K=200 spherical seed {b}", kmeans_trainval, job(
            {"train": d / "pca_train.npy", "val": d / "pca_val.npy"},
            {"train": c_dir / "train_labels.npy", "val": c_dir / "val_labels.npy"},
            {"kmeans": KMEANS, "spherical": True}, {"k": 200, "seed": b}))
        add(f"  CBFE seed {b}", cbfe, job(
            {"train_labels": c_dir / "train_labels.npy", "val_labels": c_dir / "val_labels.npy",
             "train_attn": tr["attn"], "val_attn": va["attn"], "train_gt": tr["gt"]},
            {"train_fg": c_dir / "train_fg.npy", "val_fg": c_dir / "val_fg.npy",
             "clusters": c_dir / "clusters.parquet", "threshold": c_dir / "threshold.json"},
            {"cut_range": [0.55, 0.75], "round_step": 0.05, "threshold": None, "eval_size": 100},
            {"cbfe_k": 200, "cbfe_seed": b}))
        fg_in = {"train": d / "pca_train.npy", "val": d / "pca_val.npy",
                 "train_fg": c_dir / "train_fg.npy", "val_fg": c_dir / "val_fg.npy"}
        for k, ks in ((20, KMEANS_SEEDS), (149, cd_seeds)):
            for s in ks:
                f_dir = c_dir / f"fg_k{k}_seed{s}"
                out = {"train": f_dir / "train_labels.npy", "val": f_dir / "val_labels.npy"}
                add(f"  fg K={k} seed {s}", fg_kmeans, job(fg_in, out, {"kmeans": KMEANS, "eval_size": 100},
                                                           {"k": k, "seed": s}))
                if k == 20:
                    score("    score hungarian", out["val"], f_dir / "hungarian.json", "hungarian")
                    files["cbfe"].append(str(f_dir / "hungarian.json"))
                    seeds["cbfe"].append({"cbfe_seed": b, "kmeans_seed": s})
                    continue
                score("    upper bound", out["val"], f_dir / "many_to_one.json", "many_to_one")
                add("    co-occurrence", cooccurrence, job(
                    out, {"matrix": f_dir / "cooc.npy", "appearances": f_dir / "appear.npy"},
                    {"eval_size": 100}, {"k": k}))
                add("    edges wt=0.09", cd_edges, job(
                    {"matrix": f_dir / "cooc.npy"}, {"edges": f_dir / "edges.parquet"}, {},
                    {"weight_threshold": "0.09"}))
                add("    Infomap x10", infomap, job(
                    {"edges": f_dir / "edges.parquet", "matrix": f_dir / "cooc.npy"},
                    {"communities": f_dir / "comms.parquet", "runs": f_dir / "runs.parquet"},
                    {"seeds": INFOMAP_SEEDS, "two_level": True, "num_trials": 1, "infomap": "current"},
                    {"markov_time": "2", "preferred_modules": "20"}))
                add("    CD merge + score x10", cd_score, job(
                    {"communities": f_dir / "comms.parquet", "runs": f_dir / "runs.parquet",
                     "labels": out["val"], "gt": va["gt"]},
                    {"merged": f_dir / "merged.npy", "metrics": f_dir / "cd.json"},
                    {"num_classes": 21, "too_many_modules": "unmatched_to_background"}, {}))
                files["cd"].append(str(f_dir / "cd.json"))
                files["upper_bound"].append(str(f_dir / "many_to_one.json"))
                seeds["cd"].append({"cbfe_seed": b, "cd_seed": s})
                seeds["upper_bound"].append({"cbfe_seed": b, "cd_seed": s})
    return stages, files, seeds


def main() -> None:
    parser = stage_bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--cbfe-seeds", type=int, default=5, help="K=200 clusterings (cbfe.seeds 0..N-1)")
    parser.add_argument("--cd-seeds", type=int, default=5, help="K=149 clusterings per CBFE clustering")
    args = parser.parse_args()
    work, inputs = start_stage_bench(args, "bench_robust_")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    stages, files, seeds = plan(work, inputs, list(range(args.cbfe_seeds)), list(range(args.cd_seeds)))
    total, cpu_total, peak = 0.0, 0.0, 0.0
    for name, fn in stages:
        seconds, cpu, rss = measure(name, fn)
        total += seconds
        cpu_total += cpu
        peak = max(peak, rss)
    result = build_table(files, seeds, {"dino": "synthetic", "leopart": "synthetic"}, "pvoc",
                         table_rows(21, 20, 149), table_comparisons())
    print(result.table.drop(columns=["source"]).to_string(index=False), flush=True)
    print(result.comparisons.to_string(index=False), flush=True)
    for row in ("+ CBFE", "+ CD", "upper bound"):
        for g in result.record["rows"][row]["groupings"]:
            print(f"{row} by {'/'.join(g['by'])}: between {g['between_std']:.2f}, within {g['within_std']:.2f}",
                  flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"robust total_s={total:.1f} cpu_s={cpu_total:.1f} peak_rss_mib={peak:.0f} stages={len(stages)}",
          flush=True)


if __name__ == "__main__":
    main()

"""Benchmark: the evaluation half of the pipeline at PVOC scale (a benchmark, not a test).

Inputs are built from the 2913 real PVOC 2012 train/val masks in ``../shared/data/voc2012-masks``:
ground truth at 100×100 exactly as the pipeline prepares it, synthetic 384-d patch tokens on the
28×28 grid that follow the masks (a vector per class, per part of an object and per background
"stuff" type, plus noise), written as ``.npy`` like the inference stage writes them, and attention
masks that follow the masks with 10 % of tokens flipped.

Then the pipeline's own stage functions (``leopart.stages.*``) run in the order of the workflow,
each in a forked child process so that its wall time and peak RSS are measured separately:
standardise + PCA-50 over all train+val tokens, K=21 × 5 seeds on val (Hungarian), K=200
spherical on train+val, CBFE, K=20 × 5 foreground (Hungarian), K=149 foreground, upper bound
(many-to-one), co-occurrence, edges, 10 Infomap runs, CD scoring.

The last line reads ``eval-half total_s=<seconds> peak_rss_mib=<MiB>``. Target on 2 cores: ≤ 60 s
and ≤ 3 GiB. Usage: ``make bench-eval`` (or ``python bench/bench_eval.py --workdir DIR``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leopart.data.voc import voc_split_index  # noqa: E402
from leopart.io import npy_writer, save_npy  # noqa: E402
from leopart.stages.runner import StageCall  # noqa: E402

MASKS = Path(os.environ.get("LEOPART_SHARED", ROOT.parent / "shared")) / "data" / "voc2012-masks"
KMEANS = {"niter": 100, "nredo": 5, "max_points_per_centroid": 256, "min_points_per_centroid": 39}


def Smk(input: dict, output: dict, params: dict, wildcards: dict, threads: int = 2) -> StageCall:
    """A stage call as the workflow makes it (paths as strings, wildcards as strings)."""
    return StageCall(input={k: str(v) for k, v in input.items()}, output={k: str(v) for k, v in output.items()},
                     params=params, wildcards={k: str(v) for k, v in wildcards.items()}, threads=threads)


def input_paths(work: Path) -> dict[str, Any]:
    """Where :func:`build_inputs` writes the ground truth, tokens and attention masks per split."""
    return {split: {"gt": work / f"gt_{split}.npy", "tokens": work / f"{split}_tokens.npy",
                    "attn": work / f"attn_{split}.npy"} for split in ("train", "val")}


def synthetic_vectors(rng: np.random.Generator, dim: int = 384) -> dict[str, np.ndarray]:
    """The vectors synthetic tokens are made of: per class, per (class, part), per stuff type."""
    n_classes, n_parts, n_stuff = 21, 3, 6
    rows, cols = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    return {
        "class": rng.standard_normal((n_classes, dim)).astype(np.float32) * 1.0,
        "part": rng.standard_normal((n_classes, n_parts, dim)).astype(np.float32) * 0.6,
        "stuff": rng.standard_normal((n_stuff, dim)).astype(np.float32) * 0.8,
        "part_of_pos": ((rows // 6) + (cols // 9)) % n_parts,  # (28, 28) part layout
    }


def token_ground_truth(mask_paths: list) -> np.ndarray:
    """``(N, 28, 28)`` int64 class per token (masks at 448 then 28, ignore 255 -> background)."""
    from leopart.data.masks import ground_truth

    tok_gt = ground_truth(mask_paths, 21, 448, 28, progress=False)
    return np.where(tok_gt == 255, 0, tok_gt).astype(np.int64)


def token_chunks(tok_gt: np.ndarray, rng: np.random.Generator, vecs: dict[str, np.ndarray],
                 chunk: int = 128) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, tokens)`` with ``tokens`` ``(b, 28, 28, D)`` float32 following ``tok_gt[start:start+b]``."""
    n_stuff = vecs["stuff"].shape[0]
    for start in range(0, tok_gt.shape[0], chunk):
        g = tok_gt[start:start + chunk]
        stuff = rng.integers(0, n_stuff, size=(g.shape[0], 1, 1))
        vec = vecs["class"][g] + vecs["part"][g, vecs["part_of_pos"][None]]
        bg = vecs["stuff"][np.broadcast_to(stuff, g.shape)]
        vec = np.where((g == 0)[..., None], bg, vec)
        vec += rng.standard_normal(vec.shape, dtype=np.float32) * 0.9
        yield start, vec


def synthetic_attention(tok_gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N, 28, 28)`` uint8 attention masks: the object tokens with 10 % of all tokens flipped."""
    return ((tok_gt != 0) ^ (rng.random(tok_gt.shape) < 0.10)).astype(np.uint8)


def build_inputs(work: Path, seed: int = 0) -> dict[str, Any]:
    """Ground truth, tokens and attention masks for train and val from the real masks."""
    from leopart.data.masks import ground_truth

    rng = np.random.default_rng(seed)
    vecs = synthetic_vectors(rng)
    dim = vecs["class"].shape[1]
    for split in ("train", "val"):
        index = voc_split_index(MASKS, split, require_images=False)
        gt = ground_truth(index.mask_paths, 21, 448, 100, progress=False)
        save_npy(work / f"gt_{split}.npy", gt)
        tok_gt = token_ground_truth(index.mask_paths)
        n = len(index)
        with npy_writer(work / f"{split}_tokens.npy", (n, 28, 28, dim), np.float32) as out:
            for start, vec in token_chunks(tok_gt, rng, vecs):
                out[start:start + vec.shape[0]] = vec
        save_npy(work / f"attn_{split}.npy", synthetic_attention(tok_gt, rng))
    return input_paths(work)


def measure(name: str, fn: Callable[[], None]) -> tuple[float, float, float]:
    """Run ``fn`` in a forked child; return (wall s, child CPU s, child peak RSS MiB). CPU time
    depends less than wall time on other load of the machine."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            print(f"stage {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark stage {name} failed")
    cpu, rss_mib = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0
    print(f"{name:<28s} {seconds:7.2f} s  cpu {cpu:7.2f} s  peak_rss {rss_mib:8.1f} MiB", flush=True)
    return seconds, cpu, rss_mib


def reuse_or_build_inputs(work: Path, reuse: bool) -> dict[str, Any]:
    """The inputs under ``work``: reused when ``reuse`` and all present, else built (not counted)."""
    t0 = time.perf_counter()
    paths = input_paths(work)
    if reuse and all(p.is_file() for split in paths.values() for p in split.values()):
        print(f"reusing inputs under {work}", flush=True)
        return paths
    inputs = build_inputs(work)
    print(f"inputs built in {time.perf_counter() - t0:.1f} s under {work} (not counted)", flush=True)
    return inputs


def stage_bench_parser(description: str) -> argparse.ArgumentParser:
    """Options shared by the stage benchmarks (this one and bench_robust.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs/artefacts here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse-inputs", action="store_true",
                        help="reuse inputs already built in --workdir (they are deterministic)")
    return parser


def start_stage_bench(args: argparse.Namespace, prefix: str) -> tuple[Path, dict[str, Any]]:
    """Work folder (``--workdir`` or a new temporary one), warnings-only logging, ``--threads``
    and the inputs (:func:`reuse_or_build_inputs`) of a stage benchmark."""
    import logging

    from leopart.stages.runner import set_threads, setup_logging

    work = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    setup_logging(None)
    logging.getLogger().setLevel(logging.WARNING)
    set_threads(args.threads)
    return work, reuse_or_build_inputs(work, args.reuse_inputs)


def main() -> None:
    args = stage_bench_parser(__doc__.splitlines()[0]).parse_args()

    from leopart.stages.cbfe_stage import cbfe
    from leopart.stages.cd_stage import cd_edges, cd_score, cooccurrence, infomap
    from leopart.stages.clustering import fg_kmeans, kmeans_trainval, overcluster_kmeans, score_labels
    from leopart.stages.features import pca

    work, inputs = start_stage_bench(args, "bench_eval_")
    tr, va = inputs["train"], inputs["val"]
    d = work / "out"
    pca_cfg = {"dim": 50, "max_points_per_d": 1000, "seed": 1234}
    stages: list[tuple[str, Callable[[], None]]] = []

    def add(name: str, fn: Callable[[Any], None], smk: StageCall) -> None:
        stages.append((name, lambda: fn(smk)))

    add("standardise+PCA-50 trainval", pca, Smk(
        {"train": tr["tokens"], "val": va["tokens"]},
        {"train": d / "pca_train.npy", "val": d / "pca_val.npy", "model": d / "pca.npz"},
        {"pca": pca_cfg, "fit": "trainval", "val_limit": None}, {"model": "bench"}))
    for s in range(5):
        add(f"K=21 val seed {s}", overcluster_kmeans, Smk(
            {"val": d / "pca_val.npy"}, {"labels": d / f"oc_{s}.npy"},
            {"kmeans": KMEANS, "val_limit": None, "spherical": False}, {"k": 21, "seed": s}))
        add(f"  score seed {s}", score_labels, Smk(
            {"labels": d / f"oc_{s}.npy", "gt": va["gt"]}, {"metrics": d / f"oc_{s}.json"},
            {"num_classes": 21, "val_limit": None, "matching": "hungarian"}, {}))
    add("K=200 spherical trainval", kmeans_trainval, Smk(
        {"train": d / "pca_train.npy", "val": d / "pca_val.npy"},
        {"train": d / "k200_train.npy", "val": d / "k200_val.npy"},
        {"kmeans": KMEANS, "spherical": True}, {"k": 200, "seed": 0}))
    add("CBFE", cbfe, Smk(
        {"train_labels": d / "k200_train.npy", "val_labels": d / "k200_val.npy",
         "train_attn": tr["attn"], "val_attn": va["attn"], "train_gt": tr["gt"]},
        {"train_fg": d / "fg_train.npy", "val_fg": d / "fg_val.npy",
         "clusters": d / "clusters.parquet", "threshold": d / "threshold.json"},
        {"cut_range": [0.55, 0.75], "round_step": 0.05, "threshold": None, "eval_size": 100},
        {"cbfe_k": 200, "cbfe_seed": 0}))
    fg_in = {"train": d / "pca_train.npy", "val": d / "pca_val.npy",
             "train_fg": d / "fg_train.npy", "val_fg": d / "fg_val.npy"}
    for k, seeds in ((20, range(5)), (149, [0])):
        for s in seeds:
            out = {"train": d / f"fg{k}_{s}_train.npy", "val": d / f"fg{k}_{s}_val.npy"}
            add(f"fg K={k} seed {s}", fg_kmeans, Smk(fg_in, out, {"kmeans": KMEANS, "eval_size": 100},
                                                      {"k": k, "seed": s}))
            matching = "hungarian" if k == 20 else "many_to_one"
            add(f"  score {matching}", score_labels, Smk(
                {"labels": out["val"], "gt": va["gt"]}, {"metrics": d / f"fg{k}_{s}_{matching}.json"},
                {"num_classes": 21, "val_limit": None, "matching": matching}, {}))
    add("co-occurrence K=150", cooccurrence, Smk(
        {"train": d / "fg149_0_train.npy", "val": d / "fg149_0_val.npy"},
        {"matrix": d / "cooc.npy", "appearances": d / "appear.npy"}, {"eval_size": 100}, {"k": 149}))
    add("edges wt=0.09", cd_edges, Smk({"matrix": d / "cooc.npy"}, {"edges": d / "edges.parquet"},
                                       {}, {"weight_threshold": 0.09}))
    add("Infomap x10", infomap, Smk(
        {"edges": d / "edges.parquet", "matrix": d / "cooc.npy"},
        {"communities": d / "comms.parquet", "runs": d / "runs.parquet"},
        {"seeds": list(range(1, 11)), "two_level": True, "num_trials": 1, "infomap": "current"},
        {"markov_time": 2.0, "preferred_modules": 20}))
    add("CD merge + score x10", cd_score, Smk(
        {"communities": d / "comms.parquet", "runs": d / "runs.parquet", "labels": d / "fg149_0_val.npy",
         "gt": va["gt"]},
        {"merged": d / "merged.npy", "metrics": d / "cd.json"},
        {"num_classes": 21, "too_many_modules": "unmatched_to_background"}, {}))

    total, peak = 0.0, 0.0
    for name, fn in stages:
        seconds, _, rss = measure(name, fn)
        total += seconds
        peak = max(peak, rss)
    import json

    summary = {name: json.loads((d / f"{name}.json").read_text())["miou"]
               for name in ("oc_0", "fg20_0_hungarian", "fg149_0_many_to_one", "cd")}
    print("mIoU on the synthetic tokens (sanity only): " +
          ", ".join(f"{k}={v:.1f}" for k, v in summary.items()), flush=True)
    print(f"eval-half total_s={total:.1f} peak_rss_mib={peak:.0f}", flush=True)


if __name__ == "__main__":
    main()

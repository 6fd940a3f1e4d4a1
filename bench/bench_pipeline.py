"""Benchmark: the whole Snakemake pipeline on PVOC-scale inputs in the authors' formats (not a test).

Inputs (deterministic, built once per work folder and not counted), made with the builders of
``bench/bench_eval.py`` from the 2913 real PVOC 2012 masks in ``../shared/data/voc2012-masks``:

* raw patch tokens per split as the authors' backbones give them: ``.npy`` float16 ``(N, 784, 384)``
  (synthetic tokens that follow the masks), the same file for both models (DINO and Leopart rows);
* attention masks per split as the authors ship them: ``.pt`` float32 ``(N, 1, 28, 28)`` of 0/1;
* at ``--scale S > 1``: a VOC-layout folder with ``S×`` as many images per split, each a real image
  drawn with replacement (its mask as a symlink, its scale-1 tokens and attention mask gathered:
  the same synthetic vectors, the drawn image's noise repeated), ``dataset.pvoc.voc2012: false``.

The pinned infomap 2.2.0 build that ``cd.infomap: authors`` uses is built once under
``<workdir>/envs`` before the timed run (an environment, like a conda env; ~100 s the first time).

Then ``snakemake results/pvoc/table5.csv`` runs from empty results on ``config/pvoc.yaml`` plus an
overlay pointing at those files (``overcluster.val_limit`` = the authors' ``drop_last`` over
batches of 60, i.e. 1440 at scale 1), with ``--cores`` (2 by default) in ``<workdir>/run``.
Every rule's Snakemake benchmark file gives its time and ``max_rss``. The last line reads
``pipeline total_s=<wall of the snakemake command> peak_rss_mib=<max over all jobs>``.

Usage: ``make bench-pipeline [SCALE=10]`` or
``python bench/bench_pipeline.py [--scale 10] [--workdir DIR] [--cores 2] [--reuse-inputs] [--no-label-free]``
(``--no-label-free``: the paper's rows only, without the label-free CBFE/CD rows that
``config/pvoc.yaml`` adds beside them).
Disk: the float16 tokens take 1.8 GB at scale 1 (17.5 GB at scale 10), and the run writes about as
much again (imported tokens, PCA outputs); the inputs are checked against free space first.
Without ``--workdir`` they go to a temporary folder that is removed at the end (on stderr: what it
held); with ``--workdir`` everything is kept for ``--reuse-inputs`` and for auditing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_eval import MASKS, synthetic_attention, synthetic_vectors, token_chunks, token_ground_truth  # noqa: E402

from leopart.data.voc import voc_split_index  # noqa: E402
from leopart.io import npy_writer, release_pages, write_json  # noqa: E402

SPLITS = ("train", "val")
GRID, DIM = 28, 384


def dataset_folder(work: Path, scale: int, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """The VOC-layout mask folder of this scale and, per split, the real-mask index of every image."""
    if scale == 1:
        return MASKS, {s: np.arange(len(voc_split_index(MASKS, s, require_images=False))) for s in SPLITS}
    root = work / f"voc_x{scale}"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(exist_ok=True)
    picks = {}
    for split in SPLITS:
        index = voc_split_index(MASKS, split, require_images=False)
        pick = rng.choice(len(index), size=scale * len(index), replace=True)
        names = []
        for j, i in enumerate(pick):
            src = Path(index.mask_paths[i])
            name = f"{src.stem}_x{j:06d}"
            link = root / "SegmentationClass" / f"{name}.png"
            if not link.is_symlink():
                link.symlink_to(src.resolve())
            names.append(name)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        picks[split] = pick
    return root, picks


def build_inputs(work: Path, scale: int, seed: int = 0, base: Path | None = None) -> dict[str, Any]:
    """Write the dataset folder, float16 ``(N, 784, 384)`` tokens and ``(N, 1, 28, 28)`` attention .pt.

    Scale 1: synthetic tokens and attention for the 2913 real masks (``bench_eval`` builders).
    Scale ``S > 1``: the scale-1 inputs are built (or reused from ``base``) first; every one of the
    ``S·N`` images of a split is a real image drawn with replacement, with that image's mask, its
    scale-1 tokens and its attention mask (gathered, so the noise of a drawn image repeats).
    """
    import torch

    from leopart.tensorfile import open_tensor

    if scale > 1:
        base = base or work / "x1"
        record = base / "inputs.json"
        if not (record.is_file() and json.loads(record.read_text()).get("scale") == 1):
            base.mkdir(parents=True, exist_ok=True)
            build_inputs(base, 1, seed)
        base_files = json.loads(record.read_text())
    rng = np.random.default_rng(seed)
    vecs = synthetic_vectors(rng, DIM)
    folder, picks = dataset_folder(work, scale, np.random.default_rng(seed + 1))
    files: dict[str, Any] = {"folder": str(folder), "tokens": {}, "attention": {}, "counts": {}}
    for split in SPLITS:
        pick = picks[split]
        n = pick.shape[0]
        tokens = work / f"{split}_tokens_f16.npy"
        attn = work / f"attn_dino_{split}.pt"
        with npy_writer(tokens, (n, GRID * GRID, DIM), np.float16) as out:
            if scale == 1:
                tok_gt = token_ground_truth(voc_split_index(MASKS, split, require_images=False).mask_paths)
                for start, vec in token_chunks(tok_gt, rng, vecs, chunk=256):
                    out[start:start + vec.shape[0]] = vec.reshape(vec.shape[0], GRID * GRID, DIM)
                masks = synthetic_attention(tok_gt, rng)[:, None].astype(np.float32)
            else:
                src = np.load(base_files["tokens"][split], mmap_mode="r")
                for start in range(0, n, 512):
                    out[start:start + 512] = src[pick[start:start + 512]]
                    release_pages(src)
                    out.flush()
                    release_pages(out)
                masks = np.asarray(open_tensor(base_files["attention"][split]).array)[pick]
        torch.save(torch.from_numpy(np.ascontiguousarray(masks)), attn)
        files["tokens"][split], files["attention"][split], files["counts"][split] = str(tokens), str(attn), n
    write_json(work / "inputs.json", {"scale": scale, "seed": seed, **files})
    return files


def overlay(files: dict[str, Any], scale: int) -> dict[str, Any]:
    """Config overlay on config/pvoc.yaml: local masks, imported tokens and attention masks."""
    emb = {"train": files["tokens"]["train"], "val": files["tokens"]["val"], "reduced": False}
    pvoc: dict[str, Any] = {"folder": files["folder"], "train_masks": "SegmentationClass"}
    if scale != 1:
        pvoc["voc2012"] = False  # not PVOC 2012's split sizes
    return {
        "dataset": {"pvoc": pvoc},
        "models": {"dino": {"embeddings": emb}, "leopart": {"embeddings": emb}},
        "attention": {"files": dict(files["attention"])},
        "overcluster": {"val_limit": files["counts"]["val"] // 60 * 60},
    }


def _number(record: dict[str, str], key: str) -> float:
    """A numeric field of a Snakemake benchmark record (NaN when absent or "NA")."""
    try:
        return float(record.get(key, "nan"))
    except ValueError:
        return float("nan")


def benchmark_rows(results: Path) -> list[dict[str, Any]]:
    """One row per job from the Snakemake benchmark files: rule, tag, wall and CPU seconds, max_rss (MiB)."""
    rows = []
    for tsv in sorted(results.glob("*/benchmarks/*/*.tsv")):
        with open(tsv) as fh:
            rec = next(csv.DictReader(fh, delimiter="\t"))
        rows.append({"rule": tsv.parent.name, "tag": tsv.stem, "s": _number(rec, "s"),
                     "max_rss": _number(rec, "max_rss"), "cpu_s": _number(rec, "cpu_time")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="images per split = scale × PVOC's")
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs and the run here")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--reuse-inputs", action="store_true", help="reuse inputs built in --workdir")
    parser.add_argument("--build-only", action="store_true", help="build the inputs and stop")
    parser.add_argument("--no-label-free", action="store_true",
                        help="the paper's rows only (label_free.rows: false): no label-free CBFE/CD branch")
    parser.add_argument("--base", type=Path, default=None,
                        help="scale > 1: the scale-1 work folder to resample from (built if missing)")
    args = parser.parse_args()
    if args.scale < 1:
        raise SystemExit("--scale must be >= 1")
    work = (args.workdir or Path(tempfile.mkdtemp(prefix=f"bench_pipeline_x{args.scale}_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_benchmark(args, work)
    finally:
        # a folder of our own (no --workdir) is removed: at --scale 10 it holds ~40 GB of tokens
        if args.workdir is None:
            used = sum(f.stat().st_size for f in work.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(work, ignore_errors=True)
            print(f"removed {work} ({used / 1e9:.1f} GB); pass --workdir DIR to keep inputs and run",
                  file=sys.stderr, flush=True)


def run_benchmark(args: argparse.Namespace, work: Path) -> None:
    """Build (or reuse) the inputs under ``work``, run the pipeline there and print its figures."""
    record = work / "inputs.json"
    if args.reuse_inputs and record.is_file() and json.loads(record.read_text()).get("scale") == args.scale:
        files = json.loads(record.read_text())
        print(f"reusing inputs under {work}", flush=True)
    else:
        need = 2 * args.scale * 2913 * GRID * GRID * DIM * 2  # tokens + about as much written by the run
        free = shutil.disk_usage(work).free
        if free < need:
            raise SystemExit(f"{work}: {free / 1e9:.1f} GB free, the scale-{args.scale} benchmark needs "
                             f"about {need / 1e9:.1f} GB; use a smaller --scale")
        t0 = time.perf_counter()
        files = build_inputs(work, args.scale, base=args.base)
        print(f"inputs built in {time.perf_counter() - t0:.1f} s under {work} (not counted)", flush=True)
    if args.build_only:
        return

    # The pinned infomap 2.2.0 build (cd.infomap: authors) is an environment, like a conda env: built
    # once per machine under <workdir>/envs, shared by every later run, and not part of the timing.
    from leopart.cd.infomap_env import ensure_infomap_env, env_path

    envs = work / "envs"
    if not env_path(root=envs).is_dir():
        t0 = time.perf_counter()
        ensure_infomap_env(root=envs)
        print(f"infomap 2.2.0 environment built in {time.perf_counter() - t0:.1f} s under {envs} (not counted)",
              flush=True)

    run = work / "run"
    shutil.rmtree(run / "results", ignore_errors=True)
    shutil.rmtree(run / ".snakemake", ignore_errors=True)
    run.mkdir(parents=True, exist_ok=True)
    settings = overlay(files, args.scale)
    settings["cd"] = {"infomap_envs": str(envs)}
    if args.no_label_free:
        settings["label_free"] = {"rows": False}
    (run / "overlay.yaml").write_text(json.dumps(settings, indent=2) + "\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(run),
           "--cores", str(args.cores), "--configfile", str(ROOT / "config" / "pvoc.yaml"),
           str(run / "overlay.yaml"), "--quiet", "--", "results/pvoc/table5.csv"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    print(f"load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    total = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f"snakemake failed (exit {proc.returncode}); logs under {run / 'results'}")
    rows = benchmark_rows(run / "results")
    for r in sorted(rows, key=lambda r: -r["s"]):
        print(f"{r['rule']:<24s} {r['tag']:<34s} {r['s']:7.2f} s  cpu {r['cpu_s']:7.2f} s  "
              f"max_rss {r['max_rss']:8.1f} MiB", flush=True)
    job_s = sum(r["s"] for r in rows)
    cpu_s = sum(r["cpu_s"] for r in rows if r["cpu_s"] == r["cpu_s"])
    peak = max((r["max_rss"] for r in rows if r["max_rss"] == r["max_rss"]), default=float("nan"))
    table = (run / "results" / "pvoc" / "table5.csv").read_text().strip()
    print(f"table5.csv on the synthetic tokens (sanity only):\n{table}", flush=True)
    print(f"{len(rows)} jobs, {job_s:.1f} s of job time, {cpu_s:.1f} s of job CPU time; scale {args.scale} "
          f"({files['counts']['train']} train + {files['counts']['val']} val images); "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"pipeline total_s={total:.1f} peak_rss_mib={peak:.0f}", flush=True)


if __name__ == "__main__":
    main()

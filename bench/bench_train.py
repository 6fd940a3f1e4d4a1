"""Benchmark: Leopart training throughput and peak memory (a benchmark, not a test).

Each case runs in its own child process (so peak RSS is per case) and reports:
- ``step img/s``: images per second of ``LeopartTrainer.train_step`` on one pre-collated batch
  (teacher + student forward, Sinkhorn, loss, backward, AdamW), after one warm-up step;
- ``data img/s``: images per second of the augmentation pipeline alone (6 PIL crops per image,
  one process, ``num_workers=0``);
- ``peak RSS`` (MiB) of the child; on CUDA also ``peak GPU`` (``max_memory_allocated``).

Cases: the toy model (ViT patch 8, dim 96, depth 4, 3 heads; 64/32 px crops; head 96→1024→1024→256,
300 prototypes) and ViT-S/16 with the spec's crop sizes (224/96) and head (384→2048→2048→256,
300 prototypes), both with the default ``fg`` loss mask and queue. On CUDA, ViT-S/16 is also run
in bf16 autocast vs fp32.

Usage: ``python bench/bench_train.py [--steps 3] [--batch-cpu 2] [--batch-gpu 32] [--only toy]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {
    "toy": {
        "model": {"arch": "custom", "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3, "img_size": 64},
        "crops": {"global_size": 64, "local_size": 32},
        "head": {"hidden_dim": 1024},
        "image_size": 96,
    },
    "vits16": {
        "model": {"arch": "vit_small_patch16_224", "img_size": 224},
        "crops": {"global_size": 224, "local_size": 96},
        "head": {},
        "image_size": 320,
    },
}


def run_one(case: str, device: str, precision: str, batch: int, steps: int, threads: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(threads)
    from leopart.train.leopart_trainer import LeopartTrainer

    spec = CASES[case]
    rng = np.random.default_rng(0)
    s = spec["image_size"]
    # smooth random images (structure matters little for the cost)
    imgs = []
    for _ in range(batch):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        imgs.append(Image.fromarray(small).resize((s, s), Image.BILINEAR))
    cfg = {
        "seed": 0, "model": spec["model"], "crops": spec["crops"], "head": spec["head"],
        "batch_size": batch, "epochs": steps + 1, "device": device, "precision": precision,
        "progress": False,
    }
    trainer = LeopartTrainer(cfg, imgs)
    t0 = time.perf_counter()
    batch_data = next(iter(trainer._loader(0, 0)))
    data_s = time.perf_counter() - t0
    trainer.train_step(batch_data)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch_data)
    if device == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t0) / steps
    out = {
        "case": case, "device": device, "precision": precision, "batch": batch, "steps": steps,
        "threads": threads, "s_per_step": step_s, "step_img_s": batch / step_s, "data_img_s": batch / data_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params_m": sum(p.numel() for p in trainer.student_module.parameters()) / 1e6,
    }
    if device == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-cpu", type=int, default=2)
    ap.add_argument("--batch-toy", type=int, default=16)
    ap.add_argument("--batch-gpu", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=sorted(CASES), default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, device, precision, batch = args.child.split(":")
        print(json.dumps(run_one(case, device, precision, int(batch), args.steps, args.threads)))
        return

    import torch

    runs = []
    for case in CASES:
        if args.only and case != args.only:
            continue
        runs.append((case, "cpu", "fp32", args.batch_toy if case == "toy" else args.batch_cpu))
    if torch.cuda.is_available():
        for case in CASES:
            if args.only and case != args.only:
                continue
            for prec in ("fp32", "bf16"):
                runs.append((case, "cuda", prec, args.batch_gpu))
    print(f"{'case':8} {'device':6} {'prec':5} {'batch':>5} {'s/step':>8} {'step img/s':>10} "
          f"{'data img/s':>10} {'peak RSS MiB':>12} {'peak GPU MiB':>12}")
    for case, device, prec, batch in runs:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", f"{case}:{device}:{prec}:{batch}", "--steps", str(args.steps),
             "--threads", str(args.threads)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            print(f"{case:8} {device:6} {prec:5} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        gpu = f"{r['peak_gpu_mib']:12.0f}" if "peak_gpu_mib" in r else f"{'-':>12}"
        print(f"{case:8} {device:6} {prec:5} {batch:5d} {r['s_per_step']:8.3f} {r['step_img_s']:10.2f} "
              f"{r['data_img_s']:10.1f} {r['peak_rss_mib']:12.0f} {gpu}", flush=True)


if __name__ == "__main__":
    main()

"""Benchmark: ViT-S/16 feature extraction at 448² in fp32 vs bf16 autocast (not a test).

Runs :func:`leopart.models.vit.tokens_and_attention` (what ``features.precision`` selects between)
on the same deterministic batch of normalised random images with a seeded ViT-S/16, alternating
fp32 and bf16 rounds so that both see the same machine load, and reports images per second of
each and the agreement of the outputs: max and mean ``|Δ|`` of the final-norm patch tokens
(384-d, unit-variance after LayerNorm) and of the CLS attention.

Usage: ``make bench-precision`` or ``python bench/bench_precision.py [--device cpu] [--batch 4]
[--rounds 3] [--threads 2]``.
On CPU, bf16 is only fast with native bf16 instructions (``avx512_bf16`` / ``amx_bf16`` in
``/proc/cpuinfo``); without them PyTorch emulates it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_bf16_flags() -> list[str]:
    """The bf16-relevant CPU flags of this machine (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx") or f in ("avx512f", "avx2"))


def main() -> None:
    import torch

    from leopart.features.extract import precision_context
    from leopart.models.vit import build_vit, tokens_and_attention

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=448)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_vit("vit_small_patch16_224", seed=0).to(device).eval()
    images = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    print(f"cpu flags: {' '.join(cpu_bf16_flags()) or 'n/a'}; torch {torch.__version__}; "
          f"{args.threads} threads; batch {args.batch}; {args.size}²", flush=True)
    seconds = {"fp32": [], "bf16": []}
    out = {}
    with torch.inference_mode():
        for precision in ("fp32", "bf16"):  # warm-up
            with precision_context(device, precision):
                out[precision] = tokens_and_attention(model, images)
        for _ in range(args.rounds):
            for precision in ("fp32", "bf16"):
                start = time.perf_counter()
                with precision_context(device, precision):
                    tokens_and_attention(model, images)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[precision].append(time.perf_counter() - start)
    for precision, secs in seconds.items():
        best = min(secs)
        print(f"{precision}: {args.batch / best:.2f} img/s (best of {len(secs)}: {best:.2f} s per batch)", flush=True)
    (t32, a32), (t16, a16) = out["fp32"], out["bf16"]
    dt = (t16.float() - t32).abs()
    da = (a16.float() - a32).abs()
    print(f"tokens max|Δ|={dt.max().item():.4f} mean|Δ|={dt.mean().item():.5f} (token std {t32.std().item():.3f}); "
          f"cls_attn max|Δ|={da.max().item():.2e} (max attention {a32.max().item():.2e})", flush=True)
    print(f"precision fp32_img_s={args.batch / min(seconds['fp32']):.2f} "
          f"bf16_img_s={args.batch / min(seconds['bf16']):.2f} tokens_max_abs_diff={dt.max().item():.4f}", flush=True)


if __name__ == "__main__":
    main()

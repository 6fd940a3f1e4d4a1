"""Random-init ViT-toy baseline under per-object appearance variants of the toy design (v3 + X).

Reproduces the design-probe table of ``docs/experiments/toy-dino-cpu.md`` (fourth attempt): it
patches ``leopart.data.toy._draw_object`` so that every object's two part colours go through one
extra per-object transform drawn after the brightness factor, renders 300 val images, and prints
the random-init ViT's K=30 many-to-one and K=7 Hungarian mIoU (weight seeds 0-1, k-means seeds 0-4).

    .venv/bin/python docs/experiments/scripts/probe_toy_design.py {v3,sat,contrast,hue30,hue90,hue180}

No training involved; ~15 s per variant on 2 cores. Written against toy design v3.
"""
import inspect
import json
import sys
import tempfile
from pathlib import Path
import numpy as np
import leopart.data.toy as toy
from leopart.eval.validate import _features, _cluster_scores
from leopart.data.masks import ground_truth
from leopart.models.build import build_model
import yaml

src = inspect.getsource(toy._draw_object)
src = src.replace(
    "        c2 = ((np.asarray(part.c2) + jit) * bright).astype(np.float32)\n",
    "        c2 = ((np.asarray(part.c2) + jit) * bright).astype(np.float32)\n"
    "        c1, c2 = _VARIANT(c1, c2, obj_params)\n")
src = src.replace("    bright = rng.uniform(*BRIGHTNESS_RANGE)\n",
                  "    bright = rng.uniform(*BRIGHTNESS_RANGE)\n    obj_params = _DRAW(rng)\n")
ns = dict(vars(toy))

variant = sys.argv[1]
def draw(rng):
    if variant == "v3":
        return None
    if variant.startswith("sat"):
        return rng.uniform(0.3, 1.7)
    if variant.startswith("hue"):
        return rng.uniform(-float(variant[3:]), float(variant[3:]))
    if variant == "contrast":
        return rng.uniform(0.5, 1.5)
def var(c1, c2, p):
    if p is None:
        return c1, c2
    out = []
    for c in (c1, c2):
        if variant.startswith("sat"):
            g = c.mean()
            c = g + p * (c - g)
        elif variant.startswith("hue"):
            # rotate around grey axis by p degrees (Rodrigues)
            k = np.ones(3) / np.sqrt(3); th = np.deg2rad(p)
            c = c * np.cos(th) + np.cross(k, c) * np.sin(th) + k * (k @ c) * (1 - np.cos(th))
        elif variant == "contrast":
            c = 0.5 + p * (c - 0.5)
        out.append(np.clip(c, 0, 1).astype(np.float32))
    return out
ns["_VARIANT"] = var; ns["_DRAW"] = draw
exec(src, ns)
toy._draw_object = ns["_draw_object"]
cfg = yaml.safe_load(open("config/config.yaml"))
spec = cfg["models"]["random"]
out = Path(tempfile.mkdtemp())
toy.generate_toy(out / "toy", 10, 300, 128, 0, progress=False)
idx = toy.toy_split_index(out / "toy", "val")
gt = ground_truth(idx.mask_paths, idx.num_classes, 128, 100, progress=False)
res = {}
for wseed in (0, 1):
    s = {**spec, "weights": {**spec["weights"], "seed": wseed}}
    sub = out / f"f{wseed}"; sub.mkdir()
    tok, att = _features(build_model(s, None), list(idx.image_paths), 128, sub)
    res[wseed] = _cluster_scores(tok, gt, idx.num_classes, 30, 5)
print(variant, json.dumps(res))

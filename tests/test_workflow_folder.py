"""End to end: a folder of toy images (dataset.kind folder) with masks and without."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from test_workflow import MINI, smk, workdir  # noqa: F401  (fixture)

from leopart.data.toy import generate_toy
from leopart.table import NEEDS_LABELS_NOTE

pytestmark = pytest.mark.slow


def _toy_folder(root: Path) -> Path:
    """The mini toy images as a plain folder: mixed formats, sizes and modes (masks alike)."""
    generate_toy(root / "toy", 24, 12, 64, 3)
    toy = root / "toy"
    # one image as grayscale JPEG, one RGB 80x48 (its mask resized alike), one CMYK TIFF
    with Image.open(toy / "images" / "train_00000.png") as im:
        im.convert("L").save(toy / "images" / "train_00000.jpg")
    (toy / "images" / "train_00000.png").unlink()
    for name in ("val_00001",):
        with Image.open(toy / "images" / f"{name}.png") as im:
            im.resize((80, 48)).save(toy / "images" / f"{name}.png")
        with Image.open(toy / "masks" / f"{name}.png") as m:
            m.resize((80, 48), Image.NEAREST).save(toy / "masks" / f"{name}.png")
    with Image.open(toy / "images" / "train_00001.png") as im:
        im.convert("CMYK").save(toy / "images" / "train_00001.tif")
    (toy / "images" / "train_00001.png").unlink()
    return toy


def _swap_labels(src: Path, dest: Path, a: int, b: int) -> Path:
    """Copies of the palette masks in ``src`` with labels ``a`` and ``b`` swapped (255 kept)."""
    dest.mkdir()
    for path in sorted(src.glob("*.png")):
        with Image.open(path) as m:
            arr = np.array(m)
            swapped = arr.copy()
            swapped[arr == a], swapped[arr == b] = b, a
            out = Image.fromarray(swapped)  # mode L
            if m.mode == "P" and m.getpalette():
                out = out.convert("P")
                out.putpalette(m.getpalette())
            out.save(dest / path.name)
    return dest


def _config(root: Path, toy: Path, masks: bool, *, mask_dir: Path | None = None,
            background_class: int = 0, run: str | None = None) -> Path:
    cfg = yaml.safe_load(MINI.read_text())
    cfg["run"] = run or ("folder-masks" if masks else "folder-nomasks")
    cfg["dataset"] = {
        "kind": "folder", "num_classes": 7, "ground_truth": {"input_size": 64, "eval_size": 32},
        "background_class": background_class,
        "folder": {"images": str(toy / "images"), "masks": str(mask_dir or toy / "masks") if masks else None,
                   "splits": {"train": str(toy / "sets" / "train.txt"), "val": str(toy / "sets" / "val.txt")}
                   if masks else None},
    }
    cfg["label_free"] = {"rows": True}
    cfg["cd"]["search"] = {"weight_thresholds": [0.02, 0.05], "markov_times": [1.0, 2.0]}
    path = root / f"{cfg['run']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_folder_with_and_without_masks_runs_end_to_end(workdir: Path) -> None:  # noqa: F811
    toy = _toy_folder(workdir)
    # with masks: the paper's rows and the label-free rows beside them, all numbers
    smk("results/table5.csv", "--cores", "2", "--configfile", str(_config(workdir, toy, True)), cwd=workdir)
    table = pd.read_csv(workdir / "results" / "folder-masks" / "table5.csv")
    assert table["row"].tolist() == ["DINO", "+ Leopart", "+ CBFE", "+ CBFE (label-free)", "+ CD",
                                     "+ CD (label-free)", "upper bound"]
    assert table["miou"].notna().all() and (table["classes"] > 0).all() and table["note"].isna().all()
    run = workdir / "results" / "folder-masks" / "cbfe" / "random"
    assert "Otsu" in json.loads((run / "k12_seed0-labelfree" / "threshold.json").read_text())["selected_by"]
    assert "ground truth" in json.loads((run / "k12_seed0" / "threshold.json").read_text())["selected_by"]

    # a dataset whose background is not label 0 (road scenes: 0 = sky): the same masks with labels
    # 0 and 3 swapped and dataset.background_class 3 give the same ground truth and the same table
    swapped = _swap_labels(toy / "masks", workdir / "masks-bg3", 0, 3)
    smk("results/table5.csv", "--cores", "2", "--configfile",
        str(_config(workdir, toy, True, mask_dir=swapped, background_class=3, run="folder-bg3")), cwd=workdir)
    for split in ("train", "val"):
        assert np.array_equal(np.load(workdir / "results" / "folder-bg3" / "gt" / f"{split}.npy"),
                              np.load(workdir / "results" / "folder-masks" / "gt" / f"{split}.npy")), split
    bg3 = pd.read_csv(workdir / "results" / "folder-bg3" / "table5.csv")
    assert bg3["source"].str.startswith("results/folder-bg3/").all()
    assert bg3.drop(columns="source").equals(table.drop(columns="source"))

    # without masks: segmentations and the report; every row says it needs labels
    cfg = _config(workdir, toy, False)
    smk("report_figures", "--cores", "2", "--configfile", str(cfg), cwd=workdir)
    out = workdir / "results" / "folder-nomasks"
    table = pd.read_csv(out / "table5.csv")
    assert table["row"].tolist() == ["DINO", "+ Leopart", "+ CBFE (label-free)", "+ CD", "+ CD (label-free)",
                                     "upper bound"]
    assert table["miou"].isna().all() and (table["note"] == NEEDS_LABELS_NOTE).all()
    split = json.loads((out / "dataset" / "val.json").read_text())["split"]
    assert split == {"source": "random", "seed": 0, "val_fraction": 0.2, "train": 29, "val": 7}
    cbfe = json.loads((out / "cbfe" / "random" / "k12_seed0" / "threshold.json").read_text())
    assert "Otsu" in cbfe["selected_by"] and cbfe["train_fg_iou"] is None
    selection = json.loads((out / "cbfe" / "random" / "k12_seed0" / "fg_k11_seed0" / "cd_label_free"
                            / "selection.json").read_text())
    assert selection["best"]["weight_threshold"] in (0.02, 0.05) and np.isnan(selection["best"]["miou"])
    for row in ("dino", "cbfe", "cd", "cd_label_free", "cbfe_foreground"):
        seg = json.loads((out / "segmentations" / row / "segmentation.json").read_text())
        assert seg["images"] == 7 and seg["mapping"] is None  # cluster / community ids, no matching
    assert pd.read_csv(out / "report" / "per_class_iou.csv").empty  # no per-class IoU without labels
    # every artefact matches its provenance (cd_label_free writes two JSON files)
    for run in ("folder-masks", "folder-nomasks"):
        audit = subprocess.run([sys.executable, "-m", "leopart", "audit", f"results/{run}"], cwd=workdir,
                               capture_output=True, text=True)
        assert audit.returncode == 0 and "audit passed" in audit.stdout, audit.stdout[-2000:]
    for figure in ("table5.png", "qualitative.png", "cbfe.png", "cd_graph.png"):
        assert (out / "report" / figure).stat().st_size > 1000

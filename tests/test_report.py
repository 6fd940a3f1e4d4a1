"""Segmentation files, report figures and the report built end to end on the mini config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leopart.data.classes import TOY_CLASSES
from leopart.errors import LeopartError
from leopart.eval.score import match_result_dict, score
from leopart.metrics import hungarian_miou
from leopart.overlay import voc_palette
from leopart.report import figures
from leopart.report.segmentations import apply_mapping, blend, image_sizes, write_segmentations
from leopart.stages.report import per_class_iou, read_benchmarks, row_mapping

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "data" / "mini.yaml"


def test_metric_record_names_every_class() -> None:
    # GT class 0 predicted as label 1 and class 1 as label 0: Hungarian swaps them, IoU 1 and 1/2
    conf = np.array([[0, 4], [2, 2]])
    rec = match_result_dict(hungarian_miou(conf), conf, "hungarian", ["background", "cat"])
    assert rec["class_names"] == ["background", "cat"]
    assert rec["iou_by_class"] == pytest.approx({"background": 100 * 4 / 6, "cat": 100 * 2 / 4})
    assert list(rec["iou_by_class"].values()) == rec["iou_per_class"]
    with pytest.raises(LeopartError, match="3 class names"):
        match_result_dict(hungarian_miou(conf), conf, "hungarian", ["a", "b", "c"])
    gt = np.zeros((1, 4, 4), np.uint8)
    assert "iou_by_class" not in score(np.zeros((1, 2, 2), np.int32), gt, 2, "hungarian")


def test_mapping_then_nearest_upsampling_to_each_image_size(tmp_path: Path) -> None:
    labels = np.array([[[0, 1], [2, 3]], [[3, 3], [0, 1]]], dtype=np.int32)
    mapping = [0, 5, 5, 2]
    sizes = np.array([[3, 5], [2, 2]])
    rgb = np.full((3, 5, 3), 200, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    summary = write_segmentations(tmp_path / "seg", labels, ["a", "b"], sizes, mapping=mapping,
                                  images=[tmp_path / "a.jpg", tmp_path / "b.jpg"], overlays=1)
    # torch legacy nearest: 2 -> 3 rows [0, 0, 1], 2 -> 5 columns [0, 0, 0, 1, 1]
    expected_a = np.array([[0, 0, 0, 5, 5], [0, 0, 0, 5, 5], [5, 5, 5, 2, 2]])
    with Image.open(tmp_path / "seg" / "a.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), expected_a)
        assert tuple(im.getpalette()[15:18]) == tuple(voc_palette()[5]) == (128, 0, 128)
    with Image.open(tmp_path / "seg" / "b.png") as im:
        np.testing.assert_array_equal(np.asarray(im), [[2, 2], [0, 5]])
    assert summary["ids_present"] == [0, 2, 5]
    assert summary["pixels_per_id"] == [6 + 1, 2 + 2, 7 + 1]
    assert summary["overlays"] == ["a"]
    assert not (tmp_path / "seg" / "overlays" / "b.png").exists()
    with Image.open(tmp_path / "seg" / "overlays" / "a.png") as im:
        over = np.asarray(im)
    jpg = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    np.testing.assert_array_equal(over[0, 0], jpg[0, 0])  # background: the image itself
    np.testing.assert_array_equal(over[2, 4], blend(jpg[2:3, 4:5], np.array([[2]]))[0, 0])
    assert not (tmp_path / "seg.tmp").exists()


def test_blend_weights_colours_by_alpha() -> None:
    rgb = np.full((1, 2, 3), 100, np.uint8)
    out = blend(rgb, np.array([[0, 1]]), alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[0, 1], [114, 50, 50])  # (128 + 100) / 2, (0 + 100) / 2


def test_mapping_errors_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(LeopartError, match="labels up to 3"):
        apply_mapping(np.array([[0, 3]]), [0, 1])
    Image.new("RGB", (7, 4)).save(tmp_path / "x.png")
    np.testing.assert_array_equal(image_sizes([tmp_path / "x.png"]), [[4, 7]])
    with pytest.raises(LeopartError, match="missing.png"):
        image_sizes([tmp_path / "missing.png"])


def test_row_mapping_of_cd_runs() -> None:
    assert row_mapping({"mapping": [1, 0]}) == [1, 0]
    rec = {"runs": [{"mapping": [0, 2]}, {"mapping": [0, 1]}]}
    assert row_mapping(rec, 1) == [0, 1]
    with pytest.raises(LeopartError, match="run 2"):
        row_mapping(rec, 2)


def test_per_class_iou_over_seeds_and_runs() -> None:
    recs = [{"iou_per_class": [10.0, float("nan")]},
            {"runs": [{"iou_per_class": [20.0, float("nan")]}, {"iou_per_class": [30.0, float("nan")]}]}]
    mean, std = per_class_iou(recs)
    assert mean[0] == pytest.approx(20.0) and std[0] == pytest.approx(np.std([10, 20, 30]))
    assert np.isnan(mean[1]) and np.isnan(std[1])


def test_spring_layout_pulls_connected_nodes_together() -> None:
    # two triangles joined by nothing: within-triangle distances < between-triangle distances
    edges = np.array([[0, 1], [1, 2], [0, 2], [3, 4], [4, 5], [3, 5]])
    pos = figures.spring_layout(6, edges, np.ones(6), seed=0)
    assert pos.shape == (6, 2) and np.isfinite(pos).all() and np.abs(pos).max() <= 1 + 1e-9
    np.testing.assert_array_equal(pos, figures.spring_layout(6, edges, np.ones(6), seed=0))
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    within = [d[a, b] for a, b in edges]
    between = [d[a, b] for a in range(3) for b in range(3, 6)]
    assert max(within) < min(between)


def test_read_benchmarks(tmp_path: Path) -> None:
    (tmp_path / "cbfe").mkdir()
    (tmp_path / "cbfe" / "m_k12.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "4.5\t0:00:04\t138.29\t1592\t64\t70\t0.07\t0.04\t19.8\t1.04\n")
    (tmp_path / "pca").mkdir()
    (tmp_path / "pca" / "v.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n2.0\t0:00:02\t-\t1.5\n")
    bench = read_benchmarks(tmp_path)
    assert bench["rule"].tolist() == ["cbfe", "pca"]
    assert bench["seconds"].tolist() == [4.5, 2.0]
    assert bench["max_rss_mb"].iloc[0] == pytest.approx(138.29) and np.isnan(bench["max_rss_mb"].iloc[1])
    fig = figures.resources_figure(bench)
    assert len(fig.axes) == 2


def test_table_figure_has_a_panel_per_row() -> None:
    table = pd.DataFrame({"row": ["DINO", "+ CD"], "method": ["k", "cd"], "model": ["m", "m"],
                          "miou": [10.0, 20.0], "std": [1.0, 2.0], "n": [2, 3], "paper": [np.nan, np.nan]})
    per_class = {"DINO": (np.array([5.0, np.nan]), np.array([1.0, np.nan])),
                 "+ CD": (np.array([15.0, 25.0]), np.zeros(2))}
    fig = figures.table_figure(table, per_class, ["background", "cat"])
    assert len(fig.axes) == 3
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["background", "cat"]


@pytest.mark.slow
def test_report_on_mini_config(tmp_path: Path) -> None:
    """The report's figures and segmentation files on the mini config, then the HTML report."""
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    smk = [sys.executable, "-m", "snakemake"]
    for args in (["report_figures", "--cores", "2"], ["report_figures", "--report", "report.html"]):
        proc = subprocess.run([*smk, *args, "--configfile", str(MINI)], cwd=tmp_path, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    for section in ("1. Table 5", "2. Segmentations", "3. CBFE", "4. Community detection", "5. Resources",
                    "6. Provenance", "table5.png", "per_class_iou.csv", "qualitative.png", "cbfe.png",
                    "cd_graph.png", "infomap_runs.csv", "resources.png", "provenance.csv"):
        assert section in html, f"{section} missing from the report"
    assert html.count("data:image/png;charset") == 5  # self-contained: the 5 figures embedded
    run = tmp_path / "results" / "mini"
    manifest = pd.read_parquet(run / "dataset" / "val.parquet")
    for row in ("dino", "leopart", "cbfe_foreground", "cbfe", "cd", "upper_bound"):
        folder = run / "segmentations" / row
        pngs = sorted(p.stem for p in folder.glob("*.png"))
        assert pngs == sorted(manifest["name"]), row
        with Image.open(folder / f"{pngs[0]}.png") as im:
            assert im.mode == "P" and im.size == (64, 64)
        meta = json.loads((folder / "segmentation.json").read_text())
        assert max(meta["ids_present"]) < (2 if row == "cbfe_foreground" else 7)
        assert len(list((folder / "overlays").glob("*.png"))) == 8
    metrics = json.loads(next((run / "overcluster").rglob("metrics.json")).read_text())
    assert metrics["class_names"] == TOY_CLASSES and set(metrics["iou_by_class"]) == set(TOY_CLASSES)
    provenance = pd.read_csv(run / "report" / "provenance.csv")
    assert {"code", "version", "artefact", "config"} <= set(provenance["section"])

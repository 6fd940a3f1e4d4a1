"""Stage functions as the rules call them: defined behaviour where the authors assert, one-line
errors, atomic outputs, and the Table 5 aggregation."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leopart.errors import LeopartError
from leopart.io import save_npy, write_parquet
from leopart.stages.cd_stage import cd_score
from leopart.stages.clustering import overcluster_kmeans, score_labels
from leopart.stages.runner import StageCall, write_sidecars


def call(input: dict, output: dict, params: dict, wildcards: dict | None = None) -> StageCall:
    """A stage call with paths as strings, as the runner builds it from a job."""
    return StageCall(input={k: str(v) for k, v in input.items()}, output={k: str(v) for k, v in output.items()},
                     params=params, wildcards={k: str(v) for k, v in (wildcards or {}).items()})


def _cd_case(tmp_path: Path, modules: list[int], mode: str) -> StageCall:
    """3 classes; val labels 0..3 on a 2x2 token grid; GT at 4x4 equals the label's class."""
    labels = np.array([[[0, 1], [2, 3]]], dtype=np.int32)
    gt = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]], dtype=np.uint8)
    save_npy(tmp_path / "labels.npy", labels)
    save_npy(tmp_path / "gt.npy", gt)
    comms = pd.DataFrame({"seed": 1, "node": np.arange(4), "module": np.array(modules, dtype=np.int32)})
    write_parquet(tmp_path / "comms.parquet", comms)
    write_parquet(tmp_path / "runs.parquet", pd.DataFrame({"seed": [1], "infomap": ["authors"],
                                                           "infomap_version": ["2.2.0"]}))
    return call({"communities": tmp_path / "comms.parquet", "runs": tmp_path / "runs.parquet",
                 "labels": tmp_path / "labels.npy", "gt": tmp_path / "gt.npy"},
               {"merged": tmp_path / "merged.npy", "metrics": tmp_path / "metrics.json"},
               {"num_classes": 3, "too_many_modules": mode})


def test_cd_score_merges_communities_and_isolated_labels_score_as_zero(tmp_path: Path) -> None:
    # labels 0,1 form module 1 (class 0 and class 1 pixels merged), label 2 isolated (0), label 3 module 2
    stage_call = _cd_case(tmp_path, [1, 1, 0, 2], "unmatched_to_background")
    cd_score(stage_call)
    merged = np.load(tmp_path / "merged.npy")
    assert merged.tolist() == [[[[1, 1], [0, 2]]]]
    rec = json.loads((tmp_path / "metrics.json").read_text())
    # Hungarian: module 1 -> class 0 (IoU 4/8), module 0 -> class 1? no: isolated label 0 covers
    # class-2 pixels (row 2 left) and module 2 covers class-2 pixels (row 2 right).
    # Best one-to-one: 1->0 (4/8), 0->2 (4/8) or 2->2 (4/8); one of 0/2 to class 1 (IoU 0).
    assert rec["num_runs"] == 1
    assert rec["miou"] == pytest.approx(100 * (0.5 + 0.0 + 0.5) / 3)
    assert rec["infomap"] == "authors" and rec["infomap_version"] == "2.2.0"  # from infomap_runs


def test_cd_more_modules_than_classes_is_scored_and_logged(tmp_path: Path, caplog) -> None:
    stage_call = _cd_case(tmp_path, [1, 2, 3, 4], "unmatched_to_background")
    with caplog.at_level(logging.WARNING):
        cd_score(stage_call)
    assert "Infomap found 4 modules" in caplog.text
    rec = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= rec["miou"] <= 100


def test_cd_more_modules_than_classes_fails_when_configured(tmp_path: Path) -> None:
    stage_call = _cd_case(tmp_path, [1, 2, 3, 4], "fail")
    with pytest.raises(LeopartError, match="cd.too_many_modules"):
        cd_score(stage_call)
    assert not (tmp_path / "merged.npy").exists()
    assert not list(tmp_path.glob(".merged*"))


def test_k_larger_than_tokens_names_the_key(tmp_path: Path) -> None:
    save_npy(tmp_path / "val.npy", np.zeros((1, 2, 2, 3), dtype=np.float32))
    stage_call = call({"val": tmp_path / "val.npy"}, {"labels": tmp_path / "out.npy"},
              {"kmeans": {"niter": 5, "nredo": 1, "max_points_per_centroid": 256,
                          "min_points_per_centroid": 1}, "val_limit": None, "spherical": False},
              {"k": 21, "seed": 0})
    with pytest.raises(LeopartError, match=r"overcluster.k=21 is larger than the number of points \(4\)"):
        overcluster_kmeans(stage_call)
    assert not (tmp_path / "out.npy").exists()


def test_score_labels_upsamples_tokens_like_torch_nearest(tmp_path: Path) -> None:
    labels = np.array([[[0, 1], [1, 0]]], dtype=np.int32)
    gt = np.kron(np.array([[2, 1], [1, 2]], dtype=np.uint8), np.ones((3, 3), dtype=np.uint8))[None]
    gt[0, 0, 0] = 255
    save_npy(tmp_path / "l.npy", labels)
    save_npy(tmp_path / "g.npy", gt)
    stage_call = call({"labels": tmp_path / "l.npy", "gt": tmp_path / "g.npy"}, {"metrics": tmp_path / "m.json"},
              {"num_classes": 3, "val_limit": None, "matching": "hungarian"})
    score_labels(stage_call)
    rec = json.loads((tmp_path / "m.json").read_text())
    # classes 1 and 2 perfect; class 0 absent from the GT: NaN, not averaged (it was 0 -> 66.67)
    assert rec["miou"] == pytest.approx(100.0) and rec["classes"] == 2
    assert np.isnan(rec["iou_per_class"][0]) and rec["iou_per_class"][1:] == [100.0, 100.0]
    assert rec["valid_pixels"] == 35


def test_runner_writes_sidecars_with_code_version_and_output_checksums(tmp_path: Path) -> None:
    labels = np.array([[[0, 1], [1, 0]]], dtype=np.int32)
    save_npy(tmp_path / "l.npy", labels)
    save_npy(tmp_path / "g.npy", np.ones((1, 2, 2), dtype=np.uint8))
    stage_call = call({"labels": tmp_path / "l.npy", "gt": tmp_path / "g.npy"},
                      {"metrics": tmp_path / "m.json", "copy": tmp_path / "copy.npy"},
                      {"num_classes": 3, "val_limit": None, "matching": "hungarian"})
    save_npy(tmp_path / "copy.npy", labels)
    write_sidecars("overcluster_score", stage_call, {**score_labels(stage_call), "copy": {"note": "x"}})
    embedded = json.loads((tmp_path / "m.json").read_text())
    assert embedded["stage"] == "overcluster_score"
    assert "miou" in embedded and embedded["params"]["matching"] == "hungarian"
    assert set(embedded["inputs"]) == {"labels", "gt"}
    assert set(embedded["outputs"]) == {"copy"}  # a JSON result does not checksum itself
    side = json.loads((tmp_path / "copy.json").read_text())
    assert side["note"] == "x" and side["stage"] == "overcluster_score"
    assert set(side["code_version"]) == {"package", "git_commit", "git_dirty"}
    out = side["outputs"]["copy"]
    assert out["bytes"] == (tmp_path / "copy.npy").stat().st_size
    assert out["sha256"] == hashlib.sha256((tmp_path / "copy.npy").read_bytes()).hexdigest()
    assert side["outputs"]["metrics"]["sha256"] == hashlib.sha256((tmp_path / "m.json").read_bytes()).hexdigest()


def test_missing_input_is_one_line_from_the_runner(tmp_path: Path) -> None:
    script = (
        "from snakemake.iocontainers import Namedlist\n"
        "from leopart.stages.runner import run_stage\n"
        "from leopart.stages.clustering import score_labels\n"
        "class S: pass\n"
        "s = S()\n"
        f"s.input = Namedlist(fromdict={{'labels': '{tmp_path}/nope.npy', 'gt': '{tmp_path}/gt.npy'}})\n"
        f"s.output = Namedlist(fromdict={{'metrics': '{tmp_path}/m.json'}})\n"
        "s.params = Namedlist(fromdict={'num_classes': 3, 'val_limit': None, 'matching': 'hungarian'})\n"
        "s.wildcards = Namedlist(); s.threads = 1; s.log = Namedlist(); s.rule = 't'\n"
        "run_stage(score_labels, s)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"error: {tmp_path}/nope.npy: label map file is missing" in proc.stderr
    assert "Traceback" not in proc.stderr

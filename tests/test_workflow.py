"""The Snakemake workflow: lint, config errors, and an end-to-end miniature run with reruns."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
MINI = ROOT / "tests" / "data" / "mini.yaml"


def smk(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow (Snakefile, rules, config) where a run can write results/."""
    for item in ("Snakefile", "workflow", "config"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, tmp_path / item)
        else:
            shutil.copy(src, tmp_path / item)
    return tmp_path


def test_lint_is_clean() -> None:
    proc = smk("--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def test_config_typo_is_one_clear_line(workdir: Path) -> None:
    cfg = yaml.safe_load(MINI.read_text())
    cfg["cd"]["markov_tme"] = 1.0
    bad = workdir / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = smk("-n", "--configfile", str(bad), cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "config: unknown key cd.markov_tme (typo?)" in proc.stdout + proc.stderr


def test_default_dry_run_plans_every_row() -> None:
    jobs = planned_jobs(smk("-n", "results/table5.csv").stdout)
    for rule in ("toy_dataset", "extract_features", "pca_val", "pca_trainval", "overcluster_kmeans",
                 "kmeans_trainval", "cbfe", "fg_kmeans", "cooccurrence", "infomap", "cd_score", "table5"):
        assert rule in jobs or not jobs, f"{rule} missing from the plan {jobs}"


@pytest.mark.slow
def test_mini_run_then_markov_time_change_reruns_only_cd(workdir: Path) -> None:
    cfg_path = workdir / "mini.yaml"
    shutil.copy(MINI, cfg_path)
    smk("--cores", "2", "--configfile", str(cfg_path), "results/table5.csv", cwd=workdir)
    table = pd.read_csv(workdir / "results" / "table5.csv")
    assert list(table["row"]) == ["DINO", "+ Leopart", "+ CBFE", "+ CD", "upper bound"]
    assert table["miou"].between(0, 100).all()
    assert (table["n"] == [2, 2, 2, 2, 1]).all()
    assert "random-init" in table["model"].iloc[0]
    # every job wrote a log and a benchmark file
    assert any((workdir / "results" / "mini" / "benchmarks").rglob("*.tsv"))
    # nothing is left to do
    assert planned_jobs(smk("-n", "--configfile", str(cfg_path), "results/table5.csv", cwd=workdir).stdout) == {}

    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["cd"]["markov_time"] = 1.0
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk("-n", "--configfile", str(cfg_path), "results/table5.csv", cwd=workdir).stdout)
    assert set(jobs) == {"infomap", "cd_score", "table5", "default_table", "all"}, jobs

    # a sweep over the edge weight threshold reuses the clustering and the co-occurrence matrix
    cfg["cd"]["weight_threshold"] = 0.1
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk("-n", "--configfile", str(cfg_path), "results/table5.csv", cwd=workdir).stdout)
    assert set(jobs) == {"cd_edges", "infomap", "cd_score", "table5", "default_table", "all"}, jobs

"""Artefacts do not depend on the thread count; provenance sidecars hold no per-job names."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leopart.io import stable_argv

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "data" / "mini.yaml"


def test_stable_argv_names_the_workflow_script_not_snakemakes_temporary_copy() -> None:
    argv = ["/tmp/w1/.snakemake/scripts/tmpc5j2q25d.ground_truth.py", "--x", "a/b.py"]
    assert stable_argv(argv) == ["workflow/scripts/ground_truth.py", "--x", "a/b.py"]
    assert stable_argv([".snakemake/scripts/tmp_a1b2.pca.py"]) == ["workflow/scripts/pca.py"]
    assert stable_argv(["-m", "leopart.stages.train"]) == ["-m", "leopart.stages.train"]


def _run_mini(dest: Path, threads: int) -> subprocess.CompletedProcess:
    """The miniature toy table in a scratch copy of the workflow, every job with ``threads``."""
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item)
        else:
            shutil.copy(src, dest / item)
    cfg = yaml.safe_load(MINI.read_text())
    cfg["threads"] = threads
    (dest / "mini.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/table5.csv", "--cores", str(threads),
         "--configfile", "mini.yaml"],
        cwd=dest, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _digests(results: Path) -> dict[str, str]:
    """SHA-256 of every artefact and sidecar (logs and benchmark timings excluded)."""
    return {
        str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(results.rglob("*"))
        if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(results).parts)
    }


@pytest.mark.slow
def test_mini_table_is_byte_identical_for_one_and_two_threads(tmp_path: Path) -> None:
    runs = {}
    for threads in (1, 2):
        dest = tmp_path / f"t{threads}"
        dest.mkdir()
        proc = _run_mini(dest, threads)
        if threads > 1:  # the jobs really got the threads (Snakemake prints them per job)
            assert f"threads: {threads}" in proc.stdout + proc.stderr
        runs[threads] = _digests(dest / "results")
    assert any(name.endswith("table5.csv") for name in runs[1])
    assert any(name.startswith("mini/pca/") for name in runs[1])
    differ = sorted(n for n in runs[1].keys() | runs[2].keys() if runs[1].get(n) != runs[2].get(n))
    assert differ == [], f"artefacts differ between 1 and 2 threads: {differ[:8]}"


def test_saved_checkpoints_are_byte_reproducible(tmp_path: Path) -> None:
    """torch names the archive's folder after the file it writes: the atomic save must write
    under the final name, so the same state gives the same bytes (and SHA-256) every time."""
    import zipfile

    import torch

    from leopart.train.checkpoint import save_torch

    state = {"w": torch.arange(12.0).reshape(3, 4), "step": 7, "config": {"lr": 0.1}}
    final = tmp_path / "ckpt" / "last.pt"
    save_torch(final, state)
    first = final.read_bytes()
    save_torch(final, state)  # overwrite in place: same bytes
    assert final.read_bytes() == first
    torch.save(state, tmp_path / "last.pt")  # a plain save under the same name: same bytes
    assert (tmp_path / "last.pt").read_bytes() == first
    assert {n.split("/")[0] for n in zipfile.ZipFile(final).namelist()} == {"last"}
    assert sorted(p.name for p in final.parent.iterdir()) == ["last.pt"]  # no temporary left
    assert torch.equal(torch.load(final, weights_only=True)["w"], state["w"])

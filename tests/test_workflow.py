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
    """A copy of the workflow (Snakefile, rules, config, the toy backbones) where a run can write results/."""
    for item in ("Snakefile", "workflow", "config", "models", "environment.yml"):
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


def test_default_dry_run_plans_every_row(workdir: Path) -> None:
    jobs = planned_jobs(smk("results/table5.csv", "-n", cwd=workdir).stdout)
    for rule in ("toy_dataset", "extract_features", "pca_val", "pca_trainval", "overcluster_kmeans",
                 "kmeans_trainval", "cbfe", "fg_kmeans", "cooccurrence", "infomap", "cd_score", "table5"):
        assert rule in jobs, f"{rule} missing from the plan {jobs}"
    assert "train_dino" not in jobs  # the shipped checkpoints are used unless retrain is set


def test_robust_overlay_plans_every_seed_of_every_clustering(workdir: Path) -> None:
    jobs = planned_jobs(smk("results/table5.csv", "-n", "--configfile", "config/config.yaml",
                            "config/robust.yaml", cwd=workdir).stdout)
    # 5 CBFE clusterings, each with 5 +CBFE k-means and 5 CD overclusterings (25 graphs)
    assert jobs["kmeans_trainval"] == 5 and jobs["cbfe"] == 5
    assert jobs["fg_kmeans"] == 50 and jobs["fg_score"] == 50
    assert jobs["cooccurrence"] == 25
    # and each graph under both Infomap behaviours (cd.compare_infomap_seeds)
    assert jobs["infomap"] == jobs["cd_score"] == 50
    # 5 K=7 k-means per backbone (the toy default rows DINO and +Leopart use two)
    assert jobs["overcluster_kmeans"] == 10 and jobs["table5"] == 1


@pytest.mark.slow
def test_mini_run_then_markov_time_change_reruns_only_cd(workdir: Path) -> None:
    cfg_path = workdir / "mini.yaml"
    shutil.copy(MINI, cfg_path)
    smk("results/table5.csv", "--cores", "2", "--configfile", str(cfg_path), cwd=workdir)
    table = pd.read_csv(workdir / "results" / "table5.csv")
    assert list(table["row"]) == ["DINO", "+ Leopart", "+ CBFE", "+ CD", "upper bound"]
    assert table["miou"].between(0, 100).all()
    assert (table["n"] == [2, 2, 2, 2, 1]).all()
    assert "random-init" in table["model"].iloc[0]
    # every job wrote a log and a benchmark file
    assert any((workdir / "results" / "mini" / "benchmarks").rglob("*.tsv"))
    # nothing is left to do
    assert planned_jobs(smk("results/table5.csv", "-n", "--configfile", str(cfg_path), cwd=workdir).stdout) == {}
    sidecar = yaml.safe_load((workdir / "results" / "mini" / "table5.json").read_text())
    assert [c["comparison"] for c in sidecar["comparisons"]] == [
        "+ Leopart vs DINO", "+ CBFE vs + Leopart", "+ CD vs + CBFE", "upper bound vs + CD"]
    assert (workdir / "results" / "mini" / "comparisons.csv").exists()

    # one more seed of a clustering plans only its own branch and the table
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["cbfe"]["seeds"] = [0, 1]
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk("results/table5.csv", "-n", "--configfile", str(cfg_path), cwd=workdir).stdout)
    # K=12 clustering + CBFE, 2 + 1 fg k-means (+CBFE seeds, CD clustering), their scores, CD chain
    assert jobs == {"kmeans_trainval": 1, "cbfe": 1, "fg_kmeans": 3, "fg_score": 3, "cooccurrence": 1,
                    "cd_edges": 1, "infomap": 1, "cd_score": 1, "table5": 1, "default_table": 1}, jobs
    cfg["cbfe"]["seeds"] = [0]
    cfg["cd"]["clustering_seeds"] = [0, 1]
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk("results/table5.csv", "-n", "--configfile", str(cfg_path), cwd=workdir).stdout)
    assert jobs == {"fg_kmeans": 1, "fg_score": 1, "cooccurrence": 1, "cd_edges": 1, "infomap": 1,
                    "cd_score": 1, "table5": 1, "default_table": 1}, jobs
    cfg["cd"]["clustering_seeds"] = [0]

    cfg["cd"]["markov_time"] = 1.0
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk("results/table5.csv", "-n", "--configfile", str(cfg_path), cwd=workdir).stdout)
    assert set(jobs) == {"infomap", "cd_score", "table5", "default_table"}, jobs

    # a sweep over the edge weight threshold reuses the clustering and the co-occurrence matrix
    cfg["cd"]["weight_threshold"] = 0.1
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(smk("results/table5.csv", "-n", "--configfile", str(cfg_path), cwd=workdir).stdout)
    assert set(jobs) == {"cd_edges", "infomap", "cd_score", "table5", "default_table"}, jobs


def _pvoc_mask_only_config(tmp_path: Path, voc_masks_dir: Path, infomap_envs: Path) -> Path:
    """pvoc.yaml pointed at the real masks (no images), pre-computed embeddings and attention, and
    at the shared infomap 2.2.0 build (cd.infomap: authors)."""
    import numpy as np

    from leopart.data.masks import ground_truth
    from leopart.data.voc import voc_split_index

    rng = np.random.default_rng(0)
    class_vec = rng.standard_normal((21, 16)).astype(np.float32)
    files = {}
    for split in ("train", "val"):
        index = voc_split_index(voc_masks_dir, split, require_images=False)
        tok = ground_truth(index.mask_paths, 21, 448, 8, progress=False)
        tok = np.where(tok == 255, 0, tok)
        emb = class_vec[tok] + 0.5 * rng.standard_normal((*tok.shape, 16)).astype(np.float32)
        np.save(tmp_path / f"emb_{split}.npy", emb.astype(np.float32))
        np.save(tmp_path / f"attn_{split}.npy", (tok != 0).astype(np.uint8))
        files[split] = (tmp_path / f"emb_{split}.npy", tmp_path / f"attn_{split}.npy")
    cfg = yaml.safe_load((ROOT / "config" / "pvoc.yaml").read_text())
    cfg["run"] = "pvoc-maskonly"
    cfg["dataset"]["pvoc"]["folder"] = str(voc_masks_dir)
    cfg["dataset"]["pvoc"]["train_masks"] = "SegmentationClass"
    for name in ("dino", "leopart"):
        cfg["models"][name]["embeddings"] = {"train": str(files["train"][0]), "val": str(files["val"][0]),
                                              "reduced": False}
    cfg["attention"]["files"] = {"train": str(files["train"][1]), "val": str(files["val"][1])}
    cfg["pca"]["dim"] = 8
    cfg["kmeans"].update({"niter": 20, "nredo": 1})
    cfg["cd"]["seeds"] = [0, 1, 2]
    cfg["cd"]["infomap_envs"] = str(infomap_envs)
    cfg["threads"] = 2
    cfg["label_free"] = {"rows": False}  # the paper's rows (the label-free ones: tests/test_workflow_folder.py)
    del cfg["training"]
    path = tmp_path / "pvoc-maskonly.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_pvoc_from_masks_embeddings_and_attention_files_reads_no_image(
    workdir: Path, voc_masks_dir: Path, infomap_authors_env: Path
) -> None:
    """The evaluation half on the 2913 real PVOC masks with pre-computed embeddings: no image."""
    cfg = _pvoc_mask_only_config(workdir, voc_masks_dir, infomap_authors_env.parent)
    smk("results/table5.csv", "--cores", "2", "--configfile", str(cfg), cwd=workdir)
    table = pd.read_csv(workdir / "results" / "pvoc-maskonly" / "table5.csv")
    assert list(table["paper"]) == [4.6, 18.9, 36.6, 41.7, 48.8]
    assert (table["n"] == [5, 5, 5, 3, 1]).all()
    # embeddings follow the masks, so every row is far above chance
    assert (table["miou"] > 20).all(), table
    logs = "".join(p.read_text() for p in (workdir / "results" / "pvoc-maskonly" / "logs").rglob("*.log"))
    assert "extract_features" not in logs
    manifest = pd.read_parquet(workdir / "results" / "pvoc-maskonly" / "dataset" / "val.parquet")
    assert len(manifest) == 1449 and manifest["image"].isna().all()
    gt = __import__("numpy").load(workdir / "results" / "pvoc-maskonly" / "gt" / "val.npy", mmap_mode="r")
    assert gt.shape == (1449, 100, 100)
    # +CD ran the authors' infomap 2.2.0 and says so
    runs = list((workdir / "results" / "pvoc-maskonly").rglob("infomap_runs.parquet"))
    assert len(runs) == 1
    im = pd.read_parquet(runs[0])
    assert im["infomap"].tolist() == ["authors"] * 3 and im["infomap_version"].tolist() == ["2.2.0"] * 3
    assert im["seed"].tolist() == [0, 1, 2]


def test_sharded_extraction_equals_one_job(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """features.shard_size: scatter jobs + a gather give the unsharded artefacts byte for byte."""
    cfg = yaml.safe_load(MINI.read_text())
    target = "results/mini/features/random/val_tokens.npy"
    attn = "results/mini/features/random/val_cls_attn.npy"
    plain = workdir / "plain.yaml"
    plain.write_text(yaml.safe_dump(cfg))
    smk(target, attn, "--cores", "2", "--configfile", str(plain), cwd=workdir)
    sharded_dir = tmp_path_factory.mktemp("sharded")
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = workdir / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, sharded_dir / item)
    cfg["features"]["shard_size"] = 8  # 12 val images: shards of 8 and 4 (batch size 8)
    sharded = sharded_dir / "sharded.yaml"
    sharded.write_text(yaml.safe_dump(cfg))
    smk(target, attn, "--cores", "2", "--configfile", str(sharded), cwd=sharded_dir)
    logs = sorted(p.name for p in (sharded_dir / "results/mini/logs/extract_features").iterdir())
    assert logs == ["random_val_shard0.log", "random_val_shard1.log"]
    for path in (target, attn):
        assert (sharded_dir / path).read_bytes() == (workdir / path).read_bytes()
    assert not any((sharded_dir / "results/mini/features/random/shards").glob("*.npy"))  # temp() shards

    cfg["features"]["shard_size"] = 12
    sharded.write_text(yaml.safe_dump(cfg))
    proc = smk("-n", "--configfile", str(sharded), cwd=sharded_dir, check=False)
    assert proc.returncode != 0
    assert "features.shard_size = 12 must be a multiple of features.batch_size = 8" in proc.stdout + proc.stderr


def test_models_importing_the_same_files_share_one_import(workdir: Path, voc_masks_dir: Path) -> None:
    """DINO and Leopart rows on one embeddings file: imported, reduced and clustered once."""
    cfg = _pvoc_mask_only_config(workdir, voc_masks_dir, workdir / "envs")   # a dry run builds nothing
    jobs = planned_jobs(smk("results/table5.csv", "-n", "--configfile", str(cfg), cwd=workdir).stdout)
    assert jobs["import_embeddings"] == 2 and jobs["pca_val"] == 1, jobs
    assert jobs["overcluster_kmeans"] == 5 and jobs["overcluster_score"] == 5, jobs
    # different files: each model imports its own
    data = yaml.safe_load(cfg.read_text())
    leopart_emb = data["models"]["leopart"]["embeddings"]
    for split in ("train", "val"):
        copy = workdir / f"leopart_{split}.npy"
        shutil.copy(leopart_emb[split], copy)
        leopart_emb[split] = str(copy)
    cfg.write_text(yaml.safe_dump(data))
    jobs = planned_jobs(smk("results/table5.csv", "-n", "--configfile", str(cfg), cwd=workdir).stdout)
    # (the DINO row needs only val tokens)
    assert jobs["import_embeddings"] == 3 and jobs["pca_val"] == 2 and jobs["overcluster_kmeans"] == 10, jobs

"""`leopart.audit`: artefacts checked against producer, consumer and Snakemake records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from base64 import urlsafe_b64encode
from pathlib import Path

import numpy as np
import pytest
import yaml

from leopart.audit import audit_run, format_code_version, format_table, read_snakemake_metadata
from leopart.cli import main
from leopart.errors import LeopartError
from leopart.io import code_version, provenance, save_npy, sha256_file, sidecar_path, write_json
from leopart.stages.runner import StageCall, write_sidecars

ROOT = Path(__file__).resolve().parents[1]


def _info(path: Path, workdir: Path) -> dict:
    return {"path": str(path.relative_to(workdir)), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _stage(workdir: Path, stage: str, inputs: dict[str, Path], out: Path, *, producer: bool = True) -> None:
    """The sidecar of ``out`` as :func:`run_stage` writes it (``producer``: with ``outputs`` and
    ``code_version``), or as sidecars were written before they recorded outputs (inputs only)."""
    cwd = os.getcwd()
    os.chdir(workdir)  # stages run in the Snakemake working folder: recorded paths are relative
    try:
        call = StageCall(input={n: str(p.relative_to(workdir)) for n, p in inputs.items()},
                         output={"out": str(out.relative_to(workdir))}, params={"k": 3})
        if producer:
            write_sidecars(stage, call, {"out": {}})
            return
        rec = provenance(stage=stage, params=call.params, inputs=call.input)
    finally:
        os.chdir(cwd)
    rec.pop("outputs", None)
    rec.pop("code_version", None)
    if out.suffix == ".json":
        write_json(out, {**json.loads(out.read_text()), **rec})
    else:
        write_json(sidecar_path(out), rec)


def _chain(workdir: Path, *, producer: bool = True) -> Path:
    """results/r: a.npy -> b.npy -> metrics.json, each with its record (as the stages write them)."""
    run = workdir / "results" / "r"
    a, b, m = run / "a" / "a.npy", run / "b" / "b.npy", run / "b" / "metrics.json"
    save_npy(a, np.arange(12, dtype=np.int32).reshape(1, 3, 4))
    _stage(workdir, "make_a", {}, a, producer=producer)
    save_npy(b, np.ones((1, 3, 4), dtype=np.uint8))
    _stage(workdir, "make_b", {"a": a}, b, producer=producer)
    write_json(m, {"miou": 50.0})
    _stage(workdir, "score", {"labels": b}, m, producer=producer)
    return run


def statuses(result) -> dict[str, str]:
    return {a.path: a.status for a in result.artefacts}


@pytest.mark.parametrize("producer", [True, False], ids=["outputs-recorded", "inputs-only"])
def test_clean_chain_is_ok(tmp_path: Path, producer: bool) -> None:
    run = _chain(tmp_path, producer=producer)
    result = audit_run(run)
    assert statuses(result) == {"a/a.npy": "ok", "b/b.npy": "ok",
                                "b/metrics.json": "unverified"}
    assert not result.failed
    by = {a.path: a for a in result.artefacts}
    assert by["b/b.npy"].stage == "make_b" and by["b/b.npy"].params == {"k": 3}
    assert by["b/b.npy"].code_version == (format_code_version({"code_version": code_version()}) if producer
                                          else "0.1.0 (no commit)")
    assert by["b/b.npy"].code_version.startswith("0.1.0")
    assert by["a/a.npy"].sha256 == sha256_file(run / "a" / "a.npy")


@pytest.mark.parametrize("producer", [True, False], ids=["outputs-recorded", "inputs-only"])
def test_modified_and_deleted_artefacts_fail(tmp_path: Path, producer: bool) -> None:
    run = _chain(tmp_path, producer=producer)
    save_npy(run / "b" / "b.npy", np.zeros((1, 3, 4), dtype=np.uint8))  # same size, other bytes
    (run / "a" / "a.npy").unlink()
    result = audit_run(run)
    st = statuses(result)
    assert st["a/a.npy"] == "missing"
    assert st["b/b.npy"] == "modified"
    assert result.failed
    by = {a.path: a for a in result.artefacts}
    assert "sidecar a/a.json" in by["a/a.npy"].notes[0]  # the orphan sidecar names the lost file
    assert "b/b.json" in by["a/a.npy"].notes[0]
    recorded_by = "its producer" if producer else "b/metrics.json"
    assert recorded_by in by["b/b.npy"].notes[0]
    table = format_table(result)
    assert "missing     a/a.npy" in table and "audit FAILED" in table


def test_size_change_is_modified_without_hashing(tmp_path: Path) -> None:
    run = _chain(tmp_path)
    save_npy(run / "a" / "a.npy", np.arange(24, dtype=np.int32))
    result = audit_run(run, checksum_limit_bytes=10)  # nothing is hashed: size alone decides
    by = {a.path: a for a in result.artefacts}
    assert by["a/a.npy"].status == "modified" and by["a/a.npy"].sha256 is None
    assert "bytes, recorded" in by["a/a.npy"].notes[0]


def test_large_files_are_unverified_unless_hash_all(tmp_path: Path) -> None:
    run = _chain(tmp_path)
    result = audit_run(run, checksum_limit_bytes=10)
    assert statuses(result)["a/a.npy"] == "unverified"
    assert "--hash-all" in {a.path: a for a in result.artefacts}["a/a.npy"].notes[0]
    assert not result.failed
    result = audit_run(run, checksum_limit_bytes=10, hash_all=True)
    assert statuses(result)["a/a.npy"] == "ok"


def test_input_changed_after_consumer_was_built_marks_consumer_stale(tmp_path: Path) -> None:
    """a.npy rewritten by its producer (records updated) but b.npy not rebuilt: b is stale."""
    run = _chain(tmp_path)
    a = run / "a" / "a.npy"
    save_npy(a, np.full((1, 3, 4), 7, dtype=np.int32))
    _stage(tmp_path, "make_a", {}, a)
    st = statuses(audit_run(run))
    assert st["a/a.npy"] == "ok"
    assert st["b/b.npy"] == "stale"
    assert st["b/metrics.json"] == "unverified"  # b.npy itself is intact
    assert audit_run(run).failed


def test_json_result_is_verified_by_its_sibling_sidecars(tmp_path: Path) -> None:
    """A job writing fg.npy and threshold.json (like cbfe): fg.json records the final threshold.json."""
    run = tmp_path / "results" / "r"
    save_npy(run / "c" / "fg.npy", np.ones((1, 2, 2), np.uint8))
    write_json(run / "c" / "threshold.json", {"threshold": 0.7})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        write_sidecars("cbfe", StageCall(output={"fg": "results/r/c/fg.npy", "record": "results/r/c/threshold.json"},
                                         params={"cut": 0.5}), {"fg": {}, "record": {}})
    finally:
        os.chdir(cwd)
    result = audit_run(run)
    assert statuses(result) == {"c/fg.npy": "ok", "c/threshold.json": "ok"}
    by = {a.path: a for a in result.artefacts}
    assert by["c/threshold.json"].record == "results/r/c/threshold.json"  # its own embedded record
    assert by["c/threshold.json"].params == {"cut": 0.5}
    rec = json.loads((run / "c" / "threshold.json").read_text())
    write_json(run / "c" / "threshold.json", {**rec, "threshold": 0.9})
    assert statuses(audit_run(run))["c/threshold.json"] == "modified"


def _smk_meta(workdir: Path, output: str, rule: str, input_checksums: dict[str, str] | None = None,
              incomplete: bool = False, endtime: float | None = None) -> None:
    name = urlsafe_b64encode(output.encode()).decode()
    folder = workdir / ".snakemake" / "metadata"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"rule": rule, "incomplete": incomplete, "endtime": endtime,
                                           "input_checksums": input_checksums or {}}))


def test_snakemake_metadata_missing_incomplete_and_checksums(tmp_path: Path) -> None:
    run = _chain(tmp_path, producer=False)
    # an output Snakemake made that nobody's record names, since deleted
    _smk_meta(tmp_path, "results/r/c/gone.parquet", "make_c")
    # an output of an interrupted job
    save_npy(run / "c" / "half.npy", np.zeros(3))
    _smk_meta(tmp_path, "results/r/c/half.npy", "make_half", incomplete=True)
    # Snakemake's own input checksum of a.npy, read by the job that made b.npy, disagrees
    _smk_meta(tmp_path, "results/r/b/b.npy", "make_b",
              {"results/r/a/a.npy": "sha256:" + "0" * 64})
    # outputs of other runs in the same working folder are not this run's business
    _smk_meta(tmp_path, "results/other/x.npy", "make_x")
    # an unverifiable output rewritten after its job ended (job end recorded in 1970)
    save_npy(run / "c" / "late.npy", np.zeros(3))
    _smk_meta(tmp_path, "results/r/c/late.npy", "make_late", endtime=1000.0)
    result = audit_run(run)
    st = statuses(result)
    assert st["c/gone.parquet"] == "missing"
    assert st["c/half.npy"] == "incomplete"
    assert st["a/a.npy"] == "modified"
    assert "snakemake:make_b" in {a.path: a for a in result.artefacts}["a/a.npy"].notes[0]
    assert "other/x.npy" not in " ".join(st)
    assert {a.path: a for a in result.artefacts}["c/gone.parquet"].stage == "make_c"
    assert st["c/late.npy"] == "unverified"
    assert "later than the end of the Snakemake job" in {a.path: a for a in result.artefacts}["c/late.npy"].notes[0]


def test_snakemake_metadata_long_names_are_split_into_folders(tmp_path: Path) -> None:
    output = "results/r/" + "d" * 300 + ".npy"
    b64 = urlsafe_b64encode(output.encode()).decode()
    parts = [b64[i:i + 254] for i in range(0, len(b64), 254)]
    path = tmp_path / ".snakemake" / "metadata" / Path(*["@" + p for p in parts[:-1]], parts[-1])
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"rule": "long"}))
    assert list(read_snakemake_metadata(tmp_path)) == [output]


def test_directory_output_is_one_artefact(tmp_path: Path) -> None:
    run = _chain(tmp_path)
    d = run / "dataset" / "toy"
    (d / "images").mkdir(parents=True)
    (d / ".snakemake_timestamp").write_text("")
    (d / "images" / "x.png").write_bytes(b"png")
    (d / "classes.json").write_text("{}")
    (run / "logs").mkdir()
    (run / "logs" / "job.log").write_text("log")
    st = statuses(audit_run(run))
    assert st["dataset/toy"] == "unverified"
    assert not any(p.startswith(("dataset/toy/", "logs")) for p in st)


def test_list_inputs_and_external_inputs(tmp_path: Path) -> None:
    run = _chain(tmp_path)
    ckpt = tmp_path / "models" / "w.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    rec = json.loads((run / "b" / "b.json").read_text())
    rec["inputs"]["parts"] = [_info(ckpt, tmp_path), _info(run / "a" / "a.npy", tmp_path)]
    write_json(run / "b" / "b.json", rec)
    ckpt.write_bytes(b"other weights")
    result = audit_run(run)
    st = statuses(result)
    assert st["models/w.pth"] == "modified"
    assert {a.path: a for a in result.artefacts}["models/w.pth"].scope == "external"
    assert "models/w.pth" not in statuses(audit_run(run, external=False))


def test_code_version_formats() -> None:
    assert format_code_version({"code_version": {"package": "0.1.0", "git_commit": "abcdef0123456",
                                                  "git_dirty": True}}) == "0.1.0@abcdef0123+dirty"
    assert format_code_version({"code_version": {"package": "0.1.0", "git_commit": None}}) == "0.1.0"
    assert format_code_version({"versions": {"leopart-pipeline": "0.2"}}) == "0.2 (no commit)"
    assert format_code_version({}) is None


def test_bad_run_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LeopartError, match="run folder is missing"):
        audit_run(tmp_path / "nope")
    (tmp_path / "results" / "empty").mkdir(parents=True)
    with pytest.raises(LeopartError, match="no artefacts"):
        audit_run(tmp_path / "results" / "empty")


def test_cli_exit_status_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _chain(tmp_path)
    assert main(["audit", str(run)]) == 0
    assert "audit passed" in capsys.readouterr().out
    (run / "b" / "b.npy").unlink()
    assert main(["audit", str(run), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["counts"]["missing"] == 1
    arts = {a["path"]: a for a in report["artefacts"]}
    assert arts["b/b.npy"]["status"] == "missing" and arts["b/b.npy"]["stage"] == "make_b"
    assert arts["a/a.npy"]["expected"][0]["role"] == "producer"
    assert main(["audit", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and "\n" not in err


@pytest.mark.slow
def test_audit_of_a_real_tiny_run(tmp_path: Path) -> None:
    """The mini workflow up to the CBFE foreground clustering, then a deleted and a modified file."""
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    cfg = yaml.safe_load((ROOT / "tests" / "data" / "mini.yaml").read_text())
    cfg["fg_clustering"]["seeds"] = [0]
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "results" / "mini"
    cbfe = "cbfe/random/k12_seed0"
    target = f"results/mini/{cbfe}/fg_k6_seed0/hungarian.json"
    proc = subprocess.run([sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile",
                           "mini.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def audit(*args: str) -> tuple[int, dict]:
        p = subprocess.run([sys.executable, "-m", "leopart", "audit", str(run), "--json", *args],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return p.returncode, {a["path"]: a for a in json.loads(p.stdout)["artefacts"]}

    rc, arts = audit()
    assert rc == 0, {p: (a["status"], a["notes"]) for p, a in arts.items() if a["status"] != "ok"}
    assert arts[f"{cbfe}/train_fg.npy"]["status"] == "ok"
    assert arts["gt/train.npy"]["stage"] == "ground_truth"
    assert "dataset/toy" in arts and not any(p.startswith("dataset/toy/") for p in arts)

    (run / cbfe / "train_fg.npy").unlink()
    gt = np.load(run / "gt" / "train.npy")
    gt[0, 0, 0] = (int(gt[0, 0, 0]) + 1) % 7
    np.save(run / "gt" / "train.npy", gt)
    # Snakemake itself sees nothing to redo for the deleted intermediate
    dry = subprocess.run([sys.executable, "-m", "snakemake", target, "-n", "--configfile", "mini.yaml"],
                         cwd=tmp_path, capture_output=True, text=True)
    rc, arts = audit()
    assert rc == 1
    assert arts[f"{cbfe}/train_fg.npy"]["status"] == "missing"
    assert arts["gt/train.npy"]["status"] == "modified"
    assert {p for p, a in arts.items() if a["status"] in ("missing", "modified")} == {
        f"{cbfe}/train_fg.npy", "gt/train.npy"}, dry.stdout[-500:]

"""The SLURM profile against a real single-node SLURM cluster (slurmctld + slurmd + munged).

The test installs Debian's ``slurm-wlm`` and ``munge`` (a no-op when present), starts the daemons
without systemd (tests/slurm/start-slurm.sh), runs the miniature config through
``--workflow-profile workflow/profiles/slurm`` and checks that every job of the DAG ran as a
SLURM batch job (one "submitted with SLURM jobid" line and one COMPLETED job-completion record
per job) and that the table is byte-identical to a local run's. The daemons it started are
stopped by PID afterwards, whatever happens. It skips only where it cannot install or start
SLURM (no apt-get, not root); CI runs it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "slurm"
MINI = ROOT / "tests" / "data" / "mini.yaml"
PIDDIR = Path("/run/slurm-ci")
JOBCOMP = Path("/var/log/slurm/jobcomp.log")
PIDFILES = {"slurmd": PIDDIR / "slurmd.pid", "slurmctld": PIDDIR / "slurmctld.pid",
            "munged": Path("/run/munge/munged.pid")}
# Only one SLURM test at a time on a machine: concurrent pytest runs would share the daemons.
LOCK = Path("/tmp/leopart-slurm-test.lock")
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Bound on the whole test run (SLURM run and local reference run, which overlap): 12.5 min and
# 18 min on 2 cores shared with a load of 20 and 25 (each of the 25 SLURM jobs starts two
# Snakemake processes), a fraction of that on idle cores.
RUN_TIMEOUT = 1500
# Fast polling for the test (the plugin's defaults wait 40 s before the first status check).
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]

DEFAULT_PROFILE = ROOT / "workflow" / "profiles" / "default" / "config.yaml"
SLURM_PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
GPU_RULES = {"extract_features", "extract_features_shard", "train_dino", "train_leopart"}


def _rules() -> set[str]:
    """Every rule name in the workflow, including those defined only for some configs."""
    names = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        names |= set(re.findall(r"^\s*(?:rule|checkpoint) (\w+):", path.read_text(), flags=re.M))
    return names - {"all"}


def _render(path: Path, text: str | None = None) -> dict:
    """A profile as Snakemake reads it (YTE-rendered), from the repository root."""
    import yte

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return yte.process_yaml(text if text is not None else path.read_text(), require_use_yte=True)
    finally:
        os.chdir(cwd)


def test_default_profile_is_found_and_sizes_every_rule() -> None:
    # Snakemake finds a workflow profile at profiles/default next to the root Snakefile
    assert (ROOT / "profiles" / "default" / "config.yaml").resolve() == DEFAULT_PROFILE.resolve()
    profile = _render(DEFAULT_PROFILE)
    table = profile["set-resources"]
    assert set(table) == _rules(), set(table) ^ _rules()
    for rule, res in table.items():
        assert set(res) == {"mem_mb", "runtime"}, rule
        assert isinstance(res["mem_mb"], int) and 500 <= res["mem_mb"] <= 16000, rule
        assert isinstance(res["runtime"], int) and 5 <= res["runtime"] <= 1440, rule
    # the local budget: 80 % of this machine's memory (or of a lower cgroup limit), never below
    # the largest job's request (the profile's LARGEST_JOB_MB), so that every job can run
    largest = max(res["mem_mb"] for res in table.values())
    assert f"LARGEST_JOB_MB = {largest}\n" in DEFAULT_PROFILE.read_text()
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert largest <= profile["resources"]["mem_mb"] <= max(largest, int(physical * 0.8))
    assert set(profile["set-threads"]) <= _rules()


def test_slurm_profile_takes_the_table_and_the_site_settings() -> None:
    local = _render(DEFAULT_PROFILE)
    plain = _render(SLURM_PROFILE)
    assert plain["executor"] == "slurm"
    assert plain["set-resources"] == local["set-resources"]
    assert plain["set-threads"] == local["set-threads"]
    assert plain["default-resources"] == local["default-resources"]  # no partition/account: SLURM's defaults
    text = SLURM_PROFILE.read_text()
    for name, value in (("PARTITION", "batch"), ("ACCOUNT", "proj0042"), ("GPU_PARTITION", "gpu"),
                        ("STATUS_COMMAND", "squeue")):
        assert text.count(f"  - {name} = None\n") == 1, name
        text = text.replace(f"  - {name} = None\n", f"  - {name} = {value!r}\n")
    site = _render(SLURM_PROFILE, text)
    assert site["default-resources"] == {**local["default-resources"], "slurm_partition": "batch",
                                         "slurm_account": "proj0042"}
    assert site["slurm-status-command"] == "squeue"
    for rule, res in site["set-resources"].items():
        expected = {**local["set-resources"][rule], **({"slurm_partition": "gpu"} if rule in GPU_RULES else {})}
        assert res == expected, rule


def test_cuda_rules_request_a_gpu_from_slurm(tmp_path: Path) -> None:
    """device: cuda gives the inference rule resources gpu=1, which the plugin submits as --gpus=1."""
    cfg = yaml.safe_load(MINI.read_text())
    cfg["features"]["device"] = "cuda"
    (tmp_path / "cuda.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([*SNAKEMAKE, "-n", "results/table5.csv", "--configfile", str(tmp_path / "cuda.yaml"),
                           "--workflow-profile", str(DEFAULT_PROFILE.parent)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = re.split(r"\n(?=rule )", proc.stdout)
    gpu = {re.match(r"rule (\w+)", b).group(1) for b in blocks if re.search(r"resources: .*\bgpu=1\b", b)}
    assert gpu == {"extract_features"}, gpu
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=SimpleNamespace(get=lambda key, default=None: {"gpu": 1}.get(key, default)))
    assert set_gres_string(job).strip() == "--gpus=1"


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _copy_workflow(dest: Path) -> Path:
    dest.mkdir()
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    (dest / "profiles").symlink_to("workflow/profiles")
    # the miniature config with one k-means seed per row: 25 jobs, each a SLURM job of ~10 s
    cfg = yaml.safe_load(MINI.read_text())
    cfg["overcluster"]["seeds"] = [0]
    cfg["fg_clustering"]["seeds"] = [0]
    (dest / "mini.yaml").write_text(yaml.safe_dump(cfg))
    return dest


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    """A running single-node cluster; the daemons this fixture started are stopped by PID."""
    if sys.platform != "linux" or shutil.which("apt-get") is None:
        pytest.skip("apt-get unavailable: cannot install slurm-wlm and munge")
    if os.geteuid() != 0:
        pytest.skip("not root: apt-get and the SLURM daemons need root")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail("snakemake-executor-plugin-slurm is not installed: pip install -e '.[test]'")
    with LOCK.open("w") as lock:
        deadline = time.monotonic() + 1200
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{LOCK} held by another SLURM test for 20 min")
                time.sleep(2)
        subprocess.run(["bash", str(SCRIPTS / "install-slurm.sh")], check=True, timeout=600)
        already = {name for name, f in PIDFILES.items() if f.exists() and _alive(f)}
        try:
            subprocess.run(["bash", str(SCRIPTS / "start-slurm.sh")], check=True, timeout=120,
                           env={**os.environ, "PIDDIR": str(PIDDIR)})
            yield
        finally:
            started = [name for name in PIDFILES if name not in already]
            subprocess.run(["bash", str(SCRIPTS / "stop-slurm.sh"), *started], timeout=120,
                           env={**os.environ, "PIDDIR": str(PIDDIR)})


def _interrupt(proc: subprocess.Popen) -> str:
    """Ctrl-C a snakemake started in its own session (it scancels its jobs), SIGKILL after 60 s."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


def _job_counts(text: str) -> Counter:
    """Jobs per rule from the first 'Job stats' table of a snakemake log."""
    counts: Counter = Counter()
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("Job stats:"):
            break
    for line in lines:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) == "total":
            break
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.mark.slurm
@pytest.mark.slow
def test_mini_table_through_slurm_equals_local_run(slurm_cluster: None, tmp_path: Path) -> None:
    local = _copy_workflow(tmp_path / "local")
    remote = _copy_workflow(tmp_path / "slurm")
    t0 = time.monotonic()
    # no --slurm-status-command: the profile must pick squeue itself (sacct fails without slurmdbd)
    slurm_run = subprocess.Popen(
        [*SNAKEMAKE, "results/table5.csv", "--configfile", "mini.yaml", "--workflow-profile",
         "workflow/profiles/slurm", "--jobs", "2", *FAST_POLL],
        cwd=remote, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        # the local reference run overlaps with the SLURM run, which mostly waits on polls
        ref = subprocess.run([*SNAKEMAKE, "results/table5.csv", "--configfile", "mini.yaml", "--cores", "2"],
                             cwd=local, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert ref.returncode == 0, ref.stderr[-3000:]
        try:
            log, _ = slurm_run.communicate(timeout=max(1.0, RUN_TIMEOUT - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the SLURM run took over {RUN_TIMEOUT} s:\n{_interrupt(slurm_run)[-5000:]}")
    finally:
        if slurm_run.poll() is None:
            _interrupt(slurm_run)
    wall = time.monotonic() - t0
    assert slurm_run.returncode == 0, log[-5000:]
    print(f"SLURM run + overlapping local run: {wall:.1f} s wall")

    planned = _job_counts(log)
    assert planned["table5"] == 1 and sum(planned.values()) > 20, planned
    # every job was submitted to SLURM (no local jobs), and each rule's batch logs name it
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    assert len(submitted) == sum(planned.values()), (len(submitted), planned)
    per_rule = Counter(re.search(r"slurm_logs/rule_(\w+)/", path).group(1) for _, path in submitted)
    assert per_rule == planned
    # SLURM's own record: one COMPLETED job per submission, named by this run's UUID
    run_id = re.search(r"SLURM run ID: ([0-9a-f-]{36})", log).group(1)
    records = [line for line in JOBCOMP.read_text().splitlines() if f"Name={run_id} " in line]
    assert sorted(int(re.search(r"JobId=(\d+)", r).group(1)) for r in records) == sorted(
        int(job_id) for job_id, _ in submitted)
    assert all("JobState=COMPLETED" in r for r in records), records
    # each job asked SLURM for its rule's memory and time from the profile's table
    table = _render(DEFAULT_PROFILE)["set-resources"]
    rule_of = {int(job_id): re.search(r"slurm_logs/rule_(\w+)/", path).group(1) for job_id, path in submitted}
    for r in records:
        rule = rule_of[int(re.search(r"JobId=(\d+)", r).group(1))]
        assert f",mem={table[rule]['mem_mb']}M," in r, (rule, r)
        assert f" TimeLimit={table[rule]['runtime']} " in r, (rule, r)
    # same numbers as the local run, to the byte
    assert (remote / "results" / "table5.csv").read_bytes() == (local / "results" / "table5.csv").read_bytes()

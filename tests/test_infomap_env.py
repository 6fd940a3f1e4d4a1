"""Tests for leopart.cd.infomap_env (pinned infomap build) and leopart.cd.infomap_worker, with a
stub installer instead of pip (the real 2.2.0 build is exercised by tests/test_infomap_versions.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from leopart.cd import infomap_env
from leopart.cd.communities import InfomapRun, run_infomap_runs
from leopart.cd.infomap_worker import main as worker_main, partition
from leopart.errors import LeopartError

# A stand-in "infomap 2.2.0": the legacy Infomap class with a fixed answer (every node in module
# 1, codelength 1.5), enough to check the build folder, the worker protocol and the results.
FAKE_INFOMAP = '''
__version__ = "{version}"

class _Node:
    def __init__(self, node_id):
        self.node_id, self.module_id, self.is_leaf = node_id, 1, True

class Infomap:
    def __init__(self, **kwargs):
        self.kwargs, self.links = kwargs, []
    def add_links(self, links):
        self.links += list(links)
    def run(self):
        nodes = sorted({{n for s, t, _ in self.links for n in (s, t)}})
        self.tree = [_Node(n) for n in nodes]
        self.num_top_modules, self.codelength = 1, 1.5
'''


def _stub_installer(calls: list[str], version: str = "2.2.0", delay: float = 0.0):
    def install(target: Path, wanted: str) -> None:
        calls.append(str(target))
        time.sleep(delay)
        (target / "infomap.py").write_text(FAKE_INFOMAP.format(version=version))
    return install


def test_build_is_atomic_idempotent_and_named_by_interpreter(tmp_path: Path) -> None:
    calls: list[str] = []
    path = infomap_env.ensure_infomap_env(root=tmp_path, installer=_stub_installer(calls))
    assert path == infomap_env.env_path("2.2.0", tmp_path)
    assert path.name.startswith("infomap-2.2.0-cpython-3")
    assert (path / "infomap.py").is_file()
    manifest = infomap_env.read_manifest(path)
    assert manifest is not None and manifest["version"] == "2.2.0" and manifest["build_seconds"] >= 0
    # built in a temporary sibling, then renamed: nothing else is left beside it but the lock
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{path.name}.lock", path.name]
    assert infomap_env.ensure_infomap_env(root=tmp_path, installer=_stub_installer(calls)) == path
    assert len(calls) == 1


def test_parallel_callers_build_once(tmp_path: Path) -> None:
    calls: list[str] = []
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(
        infomap_env.ensure_infomap_env(root=tmp_path, installer=_stub_installer(calls, delay=0.5))))
        for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(paths)) == 1 and len(paths) == 3


def test_failed_or_wrong_build_leaves_no_folder(tmp_path: Path) -> None:
    def broken(target: Path, version: str) -> None:
        (target / "partial.txt").write_text("x")
        raise LeopartError("cd.infomap: building infomap 2.2.0 with pip failed: no compiler")

    with pytest.raises(LeopartError, match="no compiler"):
        infomap_env.ensure_infomap_env(root=tmp_path, installer=broken)
    with pytest.raises(LeopartError, match="should provide infomap 2.2.0, python imported 9.9.9"):
        infomap_env.ensure_infomap_env(root=tmp_path, installer=_stub_installer([], version="9.9.9"))
    assert [p.name for p in tmp_path.iterdir()] == [f".{infomap_env.env_path('2.2.0', tmp_path).name}.lock"]


def test_unknown_version_is_named(tmp_path: Path) -> None:
    with pytest.raises(LeopartError, match="no pinned requirements for infomap 1.0.0"):
        infomap_env.ensure_infomap_env("1.0.0", root=tmp_path)


def test_pinned_requirement_is_hash_checked() -> None:
    req = (Path(infomap_env.__file__).parent / "envs" / "infomap-2.2.0.txt").read_text()
    line = [x for x in req.splitlines() if x.startswith("infomap")]
    assert line == ["infomap==2.2.0 --hash=sha256:ce33677268841b1eca8e148d6882a7352588b19d15cdb8ec1fde884c89bf7a34"]


def test_authors_runs_go_through_one_worker_process(tmp_path: Path) -> None:
    import pandas as pd

    path = infomap_env.ensure_infomap_env(root=tmp_path, installer=_stub_installer([]))
    g = pd.DataFrame({"source": [0, 2], "target": [1, 3], "weight": [1.0, 0.5]})
    empty = pd.DataFrame(columns=["source", "target", "weight"])
    runs = [InfomapRun(graph=0, seed=0), InfomapRun(graph=1, seed=3), InfomapRun(graph=0, seed=7)]
    res = run_infomap_runs([g, empty], 5, runs, behaviour="authors", env_dir=path)
    assert [r.seed for r in res] == [0, 3, 7]
    assert [r.version for r in res] == ["2.2.0"] * 3 and {r.behaviour for r in res} == {"authors"}
    assert res[0].module_of.tolist() == [1, 1, 1, 1, 0] and res[0].codelength == 1.5 and res[0].isolated == [4]
    assert res[1].module_of.tolist() == [0] * 5 and res[1].num_modules == 0  # no edges: no worker run
    # seed 0 is the current release's error, not the authors'
    with pytest.raises(LeopartError, match="cd.seeds: infomap >= 2.16 rejects seed 0"):
        run_infomap_runs([g], 5, [InfomapRun(graph=0, seed=0)], behaviour="current")
    with pytest.raises(LeopartError, match="cd.infomap: must be one of authors, current"):
        run_infomap_runs([g], 5, runs[:1], behaviour="2.2.0")


def test_worker_failure_is_one_line_naming_the_build(tmp_path: Path) -> None:
    import pandas as pd

    path = infomap_env.ensure_infomap_env(root=tmp_path, installer=_stub_installer([]))
    (path / "infomap.py").write_text('__version__ = "2.1.0"\n')  # tampered build
    g = pd.DataFrame({"source": [0], "target": [1], "weight": [1.0]})
    with pytest.raises(LeopartError) as info:
        run_infomap_runs([g], 2, [InfomapRun(graph=0, seed=1)], behaviour="authors", env_dir=path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "infomap 2.1.0" in msg and "needs 2.2.0" in msg


def test_worker_cli_and_unknown_behaviour(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"behaviour": "newest", "graphs": [[[0, 1, 1.0]]],
                               "runs": [{"graph": 0, "seed": 1, "markov_time": 1.0, "two_level": True}]}))
    assert worker_main([str(req), str(tmp_path / "out.json")]) == 1
    assert "unknown Infomap behaviour 'newest'" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
    assert worker_main([str(req)]) == 2
    assert worker_main(["--help"]) == 0 and "REQUEST.json RESULT.json" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not available with the authors' call"):
        partition(None, "authors", [(0, 1, 1.0)], {"seed": 1, "markov_time": 1.0, "two_level": True,
                                                     "flow_model": "rawdir"})


def test_config_seed_zero_only_with_the_authors_release() -> None:
    import copy

    from leopart.config import load_config, validate_config

    root = Path(__file__).resolve().parents[1]
    pvoc = load_config(root / "config" / "pvoc.yaml")
    assert pvoc["cd"]["infomap"] == "authors" and pvoc["cd"]["seeds"] == list(range(10))
    toy = load_config(root / "config" / "config.yaml")
    assert toy["cd"]["infomap"] == "current"
    cfg = copy.deepcopy(toy)
    cfg["cd"]["seeds"] = [0, 1]
    with pytest.raises(LeopartError, match="cd.seeds.0"):
        validate_config(cfg)
    cfg["cd"]["infomap"] = "authors"
    validate_config(cfg)
    cfg["cd"]["infomap"] = "2.2.0"
    with pytest.raises(LeopartError, match=r"cd.infomap = '2.2.0' is not one of \['authors', 'current'\]"):
        validate_config(cfg)

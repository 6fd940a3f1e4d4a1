"""Infomap community detection on the label graph and merging of label maps (spec §8.5).

The authors run ``Infomap(directed=False, two_level=True, seed=r, markov_time=2.0, silent=True,
preferred_number_of_modules=20)`` (infomap 2.2.0), ``add_links(edges)``, ``run()`` and map every
leaf node to its top-level module id (ids start at 1). Labels without an edge are not in the graph
and are merged to 0 ("isolated", not necessarily background). Links are added in the edge list's
row order (the authors' insertion order).

``preferred_number_of_modules`` changed meaning between releases, so the infomap behaviour is a
choice (config ``cd.infomap``), recorded with every result together with ``infomap.__version__``:

* ``authors``: the authors' exact call on infomap 2.2.0, where the preference is a soft penalty
  (Infomap may return many more modules). 2.2.0 is built into a folder of its own
  (:mod:`leopart.cd.infomap_env`) and run in a worker process (:mod:`leopart.cd.infomap_worker`),
  never in this process. Seeds ≥ 0 (the authors used 0..9).
* ``current``: the infomap release of the project's environment (2.16) through its ≥ 2.15 API
  (``Options`` + ``Network`` + ``infomap.run``), in this process. Its preference forces the module
  count when it can. Seeds ≥ 1 (2.16 rejects seed 0, spec §11.17); its random stream differs
  from 2.2.0's (changed in 2.5).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# faiss and infomap are both SWIG modules sharing one SWIG runtime type table. If infomap is
# imported first and faiss afterwards, faiss' ``SwigPyIterator`` proxy takes over infomap's
# iterators and reading a Result (``result.modules()``) segfaults (faiss-cpu 1.15.1 + infomap
# 2.16.0, cf. swig/swig#2913). Importing faiss first is safe for both, so do it here, before the
# only in-process ``import infomap`` in the package. Do not ``import infomap`` anywhere else
# (the worker imports its pinned build in a process of its own).
with contextlib.suppress(ImportError):
    import faiss  # noqa: F401

import infomap

from leopart.cd import infomap_env
from leopart.cd.infomap_worker import BEHAVIOURS, partition
from leopart.errors import LeopartError

__all__ = ["BEHAVIOURS", "CommunityResult", "InfomapRun", "run_infomap", "run_infomap_runs", "merge_labels"]


@dataclass
class CommunityResult:
    """Partition of the label graph.

    Attributes:
        module_of: ``(num_nodes,)`` int32; top-level Infomap module id (≥ 1) of every label in the
            graph, 0 for labels without any edge.
        num_modules: number of top-level modules.
        codelength: Infomap codelength of the partition (bits).
        isolated: ids of the labels not in the graph (``module_of == 0``), ascending.
        seed: the Infomap seed used.
        version: ``infomap.__version__`` of the release that ran.
        behaviour: ``cd.infomap`` behaviour, ``"authors"`` or ``"current"``.
    """

    module_of: np.ndarray
    num_modules: int
    codelength: float
    isolated: list[int] = field(default_factory=list)
    seed: int = 0
    version: str = ""
    behaviour: str = "current"


@dataclass(frozen=True)
class InfomapRun:
    """One Infomap run of :func:`run_infomap_runs`: graph index and the options of the run.

    Attributes:
        graph: index into the ``graphs`` list.
        seed: Infomap seed (config ``cd.seeds``): ≥ 1 for ``current``, ≥ 0 for ``authors``.
        markov_time: config ``cd.markov_time`` (> 0); higher gives fewer modules.
        two_level: two-level partition instead of a hierarchy.
        preferred_modules: config ``cd.preferred_modules``; ``None`` means no preference.
        num_trials: Infomap trials (best kept).
        flow_model: Infomap flow model (``"undirected"`` as in the paper).
    """

    graph: int
    seed: int
    markov_time: float = 2.0
    two_level: bool = True
    preferred_modules: int | None = 20
    num_trials: int = 1
    flow_model: str = "undirected"


def _check_int(value: object, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LeopartError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_run(run: InfomapRun, behaviour: str, num_graphs: int) -> dict[str, object]:
    """Validated options of one run as the worker's plain mapping."""
    min_seed = 0 if behaviour == "authors" else 1
    if behaviour == "current" and run.seed == 0:
        raise LeopartError("cd.seeds: infomap >= 2.16 rejects seed 0; use seeds >= 1 or cd.infomap: authors")
    seed = _check_int(run.seed, "cd.seeds", min_seed)
    num_trials = _check_int(run.num_trials, "cd.num_trials", 1)
    pm = run.preferred_modules
    if pm is not None:
        pm = _check_int(pm, "cd.preferred_modules", 1)
    try:
        markov_time = float(run.markov_time)
    except (TypeError, ValueError):
        raise LeopartError(f"cd.markov_time: must be a positive number, got {run.markov_time!r}") from None
    if not np.isfinite(markov_time) or markov_time <= 0:
        raise LeopartError(f"cd.markov_time: must be a positive number, got {run.markov_time!r}")
    if not 0 <= run.graph < num_graphs:
        raise LeopartError(f"cd: run refers to graph {run.graph} of {num_graphs}")
    return {"graph": int(run.graph), "seed": seed, "markov_time": markov_time, "two_level": bool(run.two_level),
            "preferred_modules": pm, "num_trials": num_trials, "flow_model": str(run.flow_model)}


def _links(edges: pd.DataFrame, num_nodes: int) -> list[tuple[int, int, float]]:
    """Validated ``(source, target, weight)`` links in row order."""
    missing = {"source", "target", "weight"} - set(edges.columns)
    if missing:
        raise LeopartError(f"cd: edge list lacks column(s) {', '.join(sorted(missing))}")
    src = edges["source"].to_numpy(dtype=np.int64)
    dst = edges["target"].to_numpy(dtype=np.int64)
    weight = edges["weight"].to_numpy(dtype=np.float64)
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
        raise LeopartError(f"cd: edge endpoints must lie in 0..{num_nodes - 1}")
    if len(weight) and not (np.all(np.isfinite(weight)) and np.all(weight >= 0)):
        raise LeopartError("cd: edge weights must be finite and non-negative")
    return list(zip(src.tolist(), dst.tolist(), weight.tolist(), strict=True))


def _run_worker(env_dir: Path, request: dict) -> dict:
    """Run ``request`` in ``python -m leopart.cd.infomap_worker`` with ``env_dir`` first on PYTHONPATH."""
    with tempfile.TemporaryDirectory(prefix="leopart-infomap-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "leopart.cd.infomap_worker", str(req), str(out)],
                              capture_output=True, text=True, env=infomap_env.worker_environ(env_dir), check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise LeopartError(f"cd.infomap: the infomap worker ({env_dir}) failed: {last}")
        return json.loads(out.read_text(encoding="utf-8"))


def run_infomap_runs(
    graphs: Sequence[pd.DataFrame],
    num_nodes: int,
    runs: Sequence[InfomapRun],
    behaviour: str = "current",
    env_dir: str | Path | None = None,
) -> list[CommunityResult]:
    """Run Infomap on undirected label graphs, many runs at once (one worker process for ``authors``).

    Args:
        graphs: DataFrames with columns ``source``, ``target`` (label ids in ``0..num_nodes-1``) and
            ``weight`` (as from :func:`leopart.cd.cooccurrence.edge_list`).
        num_nodes: number of labels ``L`` (length of every ``module_of``).
        runs: the runs, each naming its graph by index.
        behaviour: config ``cd.infomap``: ``"authors"`` (infomap 2.2.0, the authors' call, in a
            worker process) or ``"current"`` (the installed release, in this process).
        env_dir: the infomap 2.2.0 build for ``authors`` (as from
            :func:`leopart.cd.infomap_env.ensure_infomap_env`); ``None`` builds or reuses it
            under :func:`leopart.cd.infomap_env.default_root`.

    Returns:
        One :class:`CommunityResult` per run, in order. A run on a graph without edges has every
        label isolated (``num_modules`` 0, ``codelength`` 0).
    """
    if behaviour not in BEHAVIOURS:
        raise LeopartError(f"cd.infomap: must be one of {', '.join(BEHAVIOURS)}, got {behaviour!r}")
    num_nodes = _check_int(num_nodes, "cd: number of labels", 1)
    links = [_links(g, num_nodes) for g in graphs]
    opts = [_check_run(r, behaviour, len(links)) for r in runs]
    todo = [i for i, o in enumerate(opts) if links[o["graph"]]]  # runs on a graph with edges
    version = infomap.__version__
    if behaviour == "authors" and todo:
        env_dir = infomap_env.ensure_infomap_env() if env_dir is None else Path(env_dir)
        reply = _run_worker(env_dir, {"behaviour": behaviour, "expect_version": infomap_env.AUTHORS_VERSION,
                                      "graphs": links, "runs": [opts[i] for i in todo]})
        raw, version = reply["results"], reply["infomap_version"]
    else:
        try:
            raw = [partition(infomap, behaviour, links[opts[i]["graph"]], opts[i]) for i in todo]
        except (TypeError, ValueError) as exc:
            raise LeopartError(f"cd: invalid Infomap option ({exc})") from None
    if behaviour == "authors" and not todo:
        version = infomap_env.AUTHORS_VERSION
    by_run = dict(zip(todo, raw, strict=True))
    results = []
    for i, o in enumerate(opts):
        module_of = np.zeros(num_nodes, dtype=np.int32)
        num_modules, codelength = 0, 0.0
        if i in by_run:
            pairs = np.asarray(by_run[i]["modules"], dtype=np.int64).reshape(-1, 2)
            module_of[pairs[:, 0]] = pairs[:, 1]
            num_modules, codelength = int(by_run[i]["num_modules"]), float(by_run[i]["codelength"])
        results.append(CommunityResult(module_of=module_of, num_modules=num_modules, codelength=codelength,
                                       isolated=np.flatnonzero(module_of == 0).tolist(), seed=int(o["seed"]),
                                       version=version, behaviour=behaviour))
    return results


def run_infomap(
    edges: pd.DataFrame,
    num_nodes: int,
    seed: int,
    markov_time: float = 2.0,
    two_level: bool = True,
    preferred_modules: int | None = 20,
    num_trials: int = 1,
    flow_model: str = "undirected",
    behaviour: str = "current",
    env_dir: str | Path | None = None,
) -> CommunityResult:
    """Run Infomap once on the undirected label graph (see :func:`run_infomap_runs`).

    Args:
        edges: DataFrame with columns ``source``, ``target`` (label ids in ``0..num_nodes-1``) and
            ``weight`` (as from :func:`leopart.cd.cooccurrence.edge_list`).
        num_nodes: number of labels ``L`` (length of ``module_of``).
        seed: Infomap seed (config ``cd.seeds``), ≥ 1 (``current``) or ≥ 0 (``authors``).
        markov_time, two_level, preferred_modules, num_trials, flow_model: as :class:`InfomapRun`.
        behaviour: config ``cd.infomap``, ``"authors"`` or ``"current"``.
        env_dir: the infomap 2.2.0 build for ``authors`` (``None``: build or reuse the default).

    Returns:
        :class:`CommunityResult`. With no edges every label is isolated (``num_modules`` 0,
        ``codelength`` 0).
    """
    run = InfomapRun(graph=0, seed=seed, markov_time=markov_time, two_level=two_level,
                     preferred_modules=preferred_modules, num_trials=num_trials, flow_model=flow_model)
    return run_infomap_runs([edges], num_nodes, [run], behaviour=behaviour, env_dir=env_dir)[0]


def merge_labels(
    label_map: np.ndarray, module_of: np.ndarray, images_per_chunk: int = 256
) -> np.ndarray:
    """Replace every label by its community: ``module_of[label_map]``.

    Args:
        label_map: ``(N, H, W)`` integer labels in ``0..len(module_of)-1`` (memmap welcome).
        module_of: ``(L,)`` lookup table (e.g. :attr:`CommunityResult.module_of`).
        images_per_chunk: images gathered at a time.

    Returns:
        ``(N, H, W)`` int32 merged map (0 = label not in the graph).
    """
    lut = np.asarray(module_of).astype(np.int32, copy=False)
    if lut.ndim != 1:
        raise LeopartError(f"cd: module lookup table must be 1-D, found shape {lut.shape}")
    if label_map.dtype.kind not in "iu":
        raise LeopartError(f"cd: label maps must be integers, found dtype {label_map.dtype}")
    images_per_chunk = _check_int(images_per_chunk, "images_per_chunk", 1)
    out = np.empty(label_map.shape, dtype=np.int32)
    for start in range(0, label_map.shape[0], images_per_chunk):
        chunk = np.asarray(label_map[start : start + images_per_chunk])
        if chunk.size and (chunk.min() < 0 or chunk.max() >= len(lut)):
            raise LeopartError(
                f"cd: label maps contain labels {chunk.min()}..{chunk.max()} outside 0..{len(lut) - 1}"
            )
        np.take(lut, chunk, out=out[start : start + images_per_chunk])
    return out

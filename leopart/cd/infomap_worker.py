"""Infomap partitions of label graphs, callable in-process or as a worker process of its own.

Two call conventions are implemented, one per ``cd.infomap`` behaviour:

* ``authors``: the authors' exact call on the release they pinned (infomap 2.2.0)::

      im = Infomap(directed=False, two_level=True, seed=r, markov_time=mt, silent=True,
                   preferred_number_of_modules=20)
      im.add_links(edges); im.run()
      {node.node_id: node.module_id for node in im.tree if node.is_leaf}

* ``current``: the infomap ≥ 2.15 surface without legacy arguments: an ``infomap.Options``
  (``flow_model="undirected"`` replaces ``directed=False``; ``preferred_number_of_modules`` passed
  via ``Options``) applied to an ``infomap.Network`` through ``infomap.run``, which returns an
  immutable ``Result`` whose ``modules()`` maps leaf node → top-level module.

Run as ``python -m leopart.cd.infomap_worker REQUEST.json RESULT.json`` with ``PYTHONPATH``
pointing at a pinned infomap build (:mod:`leopart.cd.infomap_env`), it computes every run of the
request in a process that imports nothing but that infomap (no faiss, no other infomap release:
the SWIG clash described in :mod:`leopart.cd.communities` cannot happen there).

Request (JSON)::

    {"behaviour": "authors", "expect_version": "2.2.0",
     "graphs": [[[source, target, weight], ...], ...],      # links in insertion order
     "runs": [{"graph": 0, "seed": 1, "markov_time": 2.0, "two_level": true,
               "preferred_modules": 20 | null, "num_trials": 1, "flow_model": "undirected"}, ...]}

Result (JSON)::

    {"infomap_version": "2.2.0", "infomap_file": ".../infomap.py", "behaviour": "authors",
     "results": [{"modules": [[node, module], ...], "num_modules": 41, "codelength": 1.89}, ...]}

Module ids are Infomap's top-level module ids (≥ 1); nodes without a link are absent.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["BEHAVIOURS", "partition", "run_request", "main"]

BEHAVIOURS = ("authors", "current")

Link = Sequence[float]  # (source, target, weight)


def _partition_authors(infomap: ModuleType, links: Sequence[Link], run: Mapping[str, Any]) -> dict[str, Any]:
    """The authors' call: legacy ``Infomap(...)`` constructor, ``add_links``, ``run``, ``im.tree``."""
    flow_model = run.get("flow_model", "undirected")
    if flow_model not in ("undirected", "directed"):
        raise ValueError(f"flow model {flow_model!r} is not available with the authors' call "
                         "(directed=True/False only)")
    kwargs: dict[str, Any] = dict(directed=flow_model == "directed", two_level=bool(run["two_level"]),
                                  seed=int(run["seed"]), markov_time=float(run["markov_time"]), silent=True)
    if run.get("preferred_modules") is not None:
        kwargs["preferred_number_of_modules"] = int(run["preferred_modules"])
    if int(run.get("num_trials", 1)) != 1:
        kwargs["num_trials"] = int(run["num_trials"])
    im = infomap.Infomap(**kwargs)
    im.add_links([(int(s), int(t), float(w)) for s, t, w in links])
    im.run()
    modules = {int(node.node_id): int(node.module_id) for node in im.tree if node.is_leaf}
    return {"modules": sorted(modules.items()), "num_modules": int(im.num_top_modules),
            "codelength": float(im.codelength)}


def _partition_current(infomap: ModuleType, links: Sequence[Link], run: Mapping[str, Any]) -> dict[str, Any]:
    """The infomap ≥ 2.15 call: ``Options`` + ``Network`` + ``infomap.run`` → ``Result``."""
    kwargs: dict[str, Any] = dict(flow_model=run.get("flow_model", "undirected"), two_level=bool(run["two_level"]),
                                  seed=int(run["seed"]), markov_time=float(run["markov_time"]),
                                  num_trials=int(run.get("num_trials", 1)), silent=True)
    if run.get("preferred_modules") is not None:
        kwargs["preferred_number_of_modules"] = int(run["preferred_modules"])
    options = infomap.Options(**kwargs)
    net = infomap.Network()
    net.add_links([(int(s), int(t), float(w)) for s, t, w in links])
    result = infomap.run(net, options=options)
    modules = result.modules()
    return {"modules": sorted((int(k), int(v)) for k, v in modules.items()),
            "num_modules": int(result.num_top_modules), "codelength": float(result.codelength)}


def partition(infomap: ModuleType, behaviour: str, links: Sequence[Link], run: Mapping[str, Any]) -> dict[str, Any]:
    """One Infomap run on one graph with the call convention of ``behaviour``.

    Args:
        infomap: the imported ``infomap`` module to use.
        behaviour: ``"authors"`` or ``"current"`` (see the module docstring).
        links: ``(source, target, weight)`` triples, added in this order.
        run: ``seed``, ``markov_time``, ``two_level``, ``preferred_modules`` (``None`` = no
            preference), optional ``num_trials`` (1) and ``flow_model`` (``"undirected"``).

    Returns:
        ``modules`` (sorted ``[node, top-level module]`` pairs), ``num_modules``, ``codelength`` (bits).
    """
    if behaviour == "authors":
        return _partition_authors(infomap, links, run)
    if behaviour == "current":
        return _partition_current(infomap, links, run)
    raise ValueError(f"unknown Infomap behaviour {behaviour!r}; expected one of {', '.join(BEHAVIOURS)}")


def run_request(infomap: ModuleType, request: Mapping[str, Any]) -> dict[str, Any]:
    """Every run of a worker request (format in the module docstring) with the given ``infomap``."""
    expect = request.get("expect_version")
    if expect is not None and infomap.__version__ != expect:
        raise RuntimeError(f"infomap {infomap.__version__} from {infomap.__file__} was imported, "
                           f"the request needs {expect}")
    graphs = request["graphs"]
    results = [partition(infomap, request["behaviour"], graphs[int(run["graph"])], run) for run in request["runs"]]
    return {"infomap_version": infomap.__version__, "infomap_file": os.path.abspath(infomap.__file__),
            "behaviour": request["behaviour"], "results": results}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m leopart.cd.infomap_worker REQUEST.json RESULT.json``; errors go to stderr, exit 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m leopart.cd.infomap_worker REQUEST.json RESULT.json"
    if args in (["-h"], ["--help"]):
        print(f"{usage}\n\n{__doc__}")
        return 0
    if len(args) != 2:
        print(usage, file=sys.stderr)
        return 2
    try:
        with open(args[0], encoding="utf-8") as fh:
            request = json.load(fh)
        import infomap  # the one on PYTHONPATH: the pinned build this worker was started for

        out = run_request(infomap, request)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the parent as one line
        print(f"infomap worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    tmp = args[1] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    os.replace(tmp, args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

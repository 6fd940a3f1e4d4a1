"""Known answers of both ``cd.infomap`` behaviours: infomap 2.2.0 with the authors' call
(``authors``) and the installed infomap 2.16 (``current``), on small fixed graphs.

The partitions and codelengths below were recorded by running
``leopart.cd.communities.run_infomap_runs`` on these graphs with each behaviour (infomap 2.2.0
built from the hash-pinned sdist by ``leopart.cd.infomap_env`` on CPython 3.11; infomap 2.16.0
from the project's environment), markov time 2, two-level, one trial. Codelengths are compared
to 1e-9 bits (the last digits differ between releases and runs).

* three 5-cliques chained by weak bridges: both releases give the three cliques, with or without
  a preference of 3 modules;
* six triangles chained by weak bridges with a preference of 2 modules: 2.16 forces 2 modules for
  every seed; 2.2.0 treats the preference as a soft penalty and returns 3 modules (pairs of
  triangles, a lower codelength than any of the 2-module answers) for seed 2. Without the
  preference both give the six triangles.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from leopart.cd.communities import InfomapRun, run_infomap_runs
from leopart.cd.search import search_cd


def _chained_cliques(sizes: list[int], w_in: float = 0.5, w_bridge: float = 0.05) -> pd.DataFrame:
    """Cliques of the given sizes on consecutive node ids (weight ``w_in``); the last node of each
    clique is linked to the first of the next one with weight ``w_bridge``."""
    rows, start, ends = [], 0, []
    for s in sizes:
        rows += [(i, j, w_in) for i, j in itertools.combinations(range(start, start + s), 2)]
        ends.append((start, start + s - 1))
        start += s
    rows += [(a1, b0, w_bridge) for (_, a1), (b0, _) in zip(ends, ends[1:])]
    return pd.DataFrame(rows, columns=["source", "target", "weight"])


CLIQUES = [2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 0]  # node 15 has no edge
CLIQUES_CL = 2.442481126604501
TRIANGLES = [5, 5, 5, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 6, 6, 6]
TRIANGLES_CL = 2.025407367037434
FOUR_TWO = [2] * 6 + [1] * 12           # triangles 1-2 | 3-6
FIVE_ONE = [2] * 9 + [1] * 9            # triangles 1-3 | 4-6
PAIRS = [2] * 6 + [1] * 6 + [3] * 6     # triangles 1-2 | 3-4 | 5-6
SPLIT = [2] * 6 + [1] * 9 + [2] * 3     # triangles 1-2 and 6 | 3-5 (not contiguous)
FIVE_ONE_CURRENT = [1] * 9 + [2] * 9

# (graph, preferred modules, seed) -> (modules, codelength, module_of), per behaviour
RECORDED = {
    "authors": {  # infomap 2.2.0
        ("cliques", None, 1): (3, CLIQUES_CL, CLIQUES),
        ("cliques", 3, 1): (3, CLIQUES_CL, CLIQUES),
        ("cliques", 3, 2): (3, CLIQUES_CL, CLIQUES),
        ("triangles", None, 1): (6, TRIANGLES_CL, TRIANGLES),
        ("triangles", 2, 0): (2, 3.348292872168095, FOUR_TWO),
        ("triangles", 2, 1): (2, 3.2666037136012385, FIVE_ONE),
        ("triangles", 2, 2): (3, 2.7663538302702806, PAIRS),
        ("triangles", 2, 3): (2, 3.348292872168095, FOUR_TWO),
    },
    "current": {  # infomap 2.16.0
        ("cliques", None, 1): (3, CLIQUES_CL, CLIQUES),
        ("cliques", 3, 1): (3, CLIQUES_CL, CLIQUES),
        ("cliques", 3, 2): (3, CLIQUES_CL, CLIQUES),
        ("triangles", None, 1): (6, TRIANGLES_CL, TRIANGLES),
        ("triangles", 2, 1): (2, 3.342270583061503, SPLIT),
        ("triangles", 2, 2): (2, 3.2666037136012354, FIVE_ONE_CURRENT),
        ("triangles", 2, 3): (2, 3.2666037136012354, FIVE_ONE_CURRENT),
    },
}
VERSIONS = {"authors": "2.2.0", "current": "2.16.0"}
GRAPHS = {"cliques": (_chained_cliques([5, 5, 5]), 16), "triangles": (_chained_cliques([3] * 6), 18)}


def _check(behaviour: str, env_dir: Path | None) -> None:
    for name, (edges, num_nodes) in GRAPHS.items():
        cases = [key for key in RECORDED[behaviour] if key[0] == name]
        runs = [InfomapRun(graph=0, seed=seed, markov_time=2.0, preferred_modules=pm) for _, pm, seed in cases]
        results = run_infomap_runs([edges], num_nodes, runs, behaviour=behaviour, env_dir=env_dir)
        for key, res in zip(cases, results, strict=True):
            modules, codelength, module_of = RECORDED[behaviour][key]
            assert res.module_of.tolist() == module_of, (behaviour, key)
            assert res.num_modules == modules, (behaviour, key)
            assert res.codelength == pytest.approx(codelength, abs=1e-9), (behaviour, key)
            assert res.version == VERSIONS[behaviour] and res.behaviour == behaviour and res.seed == key[2]


def test_current_release_known_partitions() -> None:
    _check("current", None)


@pytest.mark.slow
def test_authors_release_known_partitions(infomap_authors_env: Path) -> None:
    _check("authors", infomap_authors_env)


@pytest.mark.slow
def test_search_with_the_authors_release(infomap_authors_env: Path) -> None:
    """cd_search runs its whole grid in one worker (seed 0 allowed); the rows equal single runs on
    the same edge list and carry release and behaviour."""
    import numpy as np

    from leopart.cd.cooccurrence import edge_list

    edges, n = GRAPHS["triangles"]
    matrix = np.zeros((n, n))  # symmetric: the edge list at threshold 0.01 holds the same links
    matrix[edges.source, edges.target] = matrix[edges.target, edges.source] = edges.weight
    conf = np.zeros((3, n), dtype=np.int64)
    conf[1, :6], conf[2, 6:] = 10, 10
    res = search_cd(matrix, conf, [0.01], [2.0], seeds=[0, 1], preferred_modules=2,
                    behaviour="authors", env_dir=infomap_authors_env)
    assert (res.infomap_version == "2.2.0").all() and (res.infomap == "authors").all()
    # recorded with infomap 2.2.0 (edge_list's row-major link order: other answers than GRAPHS' order)
    assert res.num_modules.tolist() == [2, 2] and res.edges.tolist() == [23, 23]
    assert res.codelength.tolist() == pytest.approx([3.348292872168095, 3.2666037136012385], abs=1e-9)
    single = run_infomap_runs([edge_list(matrix, 0.01)], n, [InfomapRun(0, seed, 2.0, preferred_modules=2)
                                                            for seed in (0, 1)],
                              behaviour="authors", env_dir=infomap_authors_env)
    assert [r.codelength for r in single] == res.codelength.tolist()

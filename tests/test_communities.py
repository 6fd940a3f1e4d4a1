"""Tests for leopart.cd.communities (spec §8.5, §11.17)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from leopart.cd.communities import CommunityResult, merge_labels, run_infomap
from leopart.errors import LeopartError


def _two_cliques() -> pd.DataFrame:
    """Nodes 0-4 and 6-10 form weighted cliques joined by one weak edge 4-6; node 5 is isolated."""
    rows = [(i, j, 0.5) for a, b in ((0, 5), (6, 11)) for i, j in itertools.combinations(range(a, b), 2)]
    rows.append((4, 6, 0.02))
    return pd.DataFrame(rows, columns=["source", "target", "weight"])


# the paper's markov time 2 with a preference of 2 modules (a preference of 20 on a 10-node graph
# would push Infomap towards singletons), and a plain run
@pytest.mark.parametrize("params", [dict(preferred_modules=2), dict(markov_time=1.0, preferred_modules=None)])
def test_two_cliques_give_two_modules(params: dict) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_infomap(_two_cliques(), num_nodes=12, seed=1, **params)
    assert not [w for w in caught if "infomap" in str(w.filename) or "Infomap" in str(w.message)]
    assert isinstance(res, CommunityResult)
    assert res.module_of.shape == (12,) and res.module_of.dtype == np.int32
    assert res.num_modules == 2
    left, right = res.module_of[:5], res.module_of[6:11]
    assert len(set(left)) == 1 and len(set(right)) == 1 and left[0] != right[0]
    assert set(res.module_of[res.module_of > 0]) == {1, 2}
    assert res.module_of[5] == 0 and res.module_of[11] == 0
    assert res.isolated == [5, 11]
    assert res.codelength > 0 and res.version.startswith("2.")


def test_seed_zero_rejected_with_key() -> None:
    with pytest.raises(LeopartError, match="cd.seeds"):
        run_infomap(_two_cliques(), num_nodes=12, seed=0)


def test_bad_edges_and_params() -> None:
    with pytest.raises(LeopartError, match="0..9"):
        run_infomap(_two_cliques(), num_nodes=10, seed=1)
    with pytest.raises(LeopartError, match="cd.markov_time"):
        run_infomap(_two_cliques(), num_nodes=12, seed=1, markov_time=0)


def test_no_edges_means_all_isolated() -> None:
    res = run_infomap(pd.DataFrame(columns=["source", "target", "weight"]), num_nodes=4, seed=3)
    assert res.num_modules == 0 and res.isolated == [0, 1, 2, 3]
    np.testing.assert_array_equal(res.module_of, 0)


def test_deterministic_for_fixed_seed() -> None:
    rng = np.random.default_rng(0)
    # a noisy planted partition: 30 nodes in 3 groups
    rows = []
    for i, j in itertools.combinations(range(30), 2):
        same = i // 10 == j // 10
        if rng.random() < (0.6 if same else 0.08):
            rows.append((i, j, float(rng.uniform(0.1, 1.0) if same else rng.uniform(0.01, 0.2))))
    edges = pd.DataFrame(rows, columns=["source", "target", "weight"])
    a = run_infomap(edges, 30, seed=5, preferred_modules=3)
    b = run_infomap(edges, 30, seed=5, preferred_modules=3)
    np.testing.assert_array_equal(a.module_of, b.module_of)
    assert a.codelength == b.codelength and a.num_modules == b.num_modules


def test_merge_labels_lut() -> None:
    module_of = np.array([2, 0, 1, 1], dtype=np.int32)
    labels = np.array([[[0, 1], [2, 3]], [[3, 3], [0, 2]], [[1, 1], [1, 0]]], dtype=np.int16)
    expected = np.array([[[2, 0], [1, 1]], [[1, 1], [2, 1]], [[0, 0], [0, 2]]])
    for chunk in (1, 2, 256):
        out = merge_labels(labels, module_of, images_per_chunk=chunk)
        assert out.dtype == np.int32 and out.shape == labels.shape
        np.testing.assert_array_equal(out, expected)
    with pytest.raises(LeopartError, match="outside 0..3"):
        merge_labels(labels + 1, module_of)


def test_import_order_with_faiss_does_not_crash() -> None:
    """infomap first, faiss second used to segfault when reading a Result (SWIG iterator clash)."""
    import subprocess
    import sys

    code = (
        "import leopart.cd.communities as c, faiss, pandas as pd\n"
        "e = pd.DataFrame({'source': [0, 1], 'target': [1, 2], 'weight': [1.0, 1.0]})\n"
        "print(c.run_infomap(e, 3, seed=1).module_of.tolist())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[1, 1, 1]"

"""Infomap community detection on the label graph and merging of label maps (spec §8.5).

The authors run ``Infomap(directed=False, two_level=True, seed=r, markov_time=2.0, silent=True,
preferred_number_of_modules=20)`` (infomap 2.2.0), ``add_links(edges)``, ``run()`` and map every
leaf node to its top-level module id (ids start at 1). Labels without an edge are not in the graph
and are merged to 0 ("isolated", not necessarily background).

This wrapper uses the infomap ≥ 2.15 surface without legacy arguments: an ``infomap.Options``
(``flow_model="undirected"`` replaces ``directed=False``; ``preferred_number_of_modules`` is passed
via ``Options`` because the constructor keyword is deprecated) applied to an ``infomap.Network``
through ``infomap.run``, which returns an immutable ``Result``. Links are added in the edge list's
row order (the authors' insertion order). Infomap ≥ 2.16 rejects seed 0 (spec §11.17) and its
random stream differs from 2.2.0's, so the infomap version is recorded with every result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# faiss and infomap are both SWIG modules sharing one SWIG runtime type table. If infomap is
# imported first and faiss afterwards, faiss' ``SwigPyIterator`` proxy takes over infomap's
# iterators and reading a Result (``result.modules()``) segfaults (faiss-cpu 1.15.1 + infomap
# 2.16.0, cf. swig/swig#2913). Importing faiss first is safe for both, so do it here, before the
# only ``import infomap`` in the package. Do not ``import infomap`` anywhere else.
with contextlib.suppress(ImportError):
    import faiss  # noqa: F401

import infomap  # noqa: E402

from leopart.errors import LeopartError

__all__ = ["CommunityResult", "run_infomap", "merge_labels"]


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
        version: ``infomap.__version__``.
    """

    module_of: np.ndarray
    num_modules: int
    codelength: float
    isolated: list[int] = field(default_factory=list)
    seed: int = 0
    version: str = ""


def _check_int(value: object, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LeopartError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def run_infomap(
    edges: pd.DataFrame,
    num_nodes: int,
    seed: int,
    markov_time: float = 2.0,
    two_level: bool = True,
    preferred_modules: int | None = 20,
    num_trials: int = 1,
    flow_model: str = "undirected",
) -> CommunityResult:
    """Run Infomap on the undirected label graph.

    Args:
        edges: DataFrame with columns ``source``, ``target`` (label ids in ``0..num_nodes-1``) and
            ``weight`` (as from :func:`leopart.cd.cooccurrence.edge_list`).
        num_nodes: number of labels ``L`` (length of ``module_of``).
        seed: Infomap seed, ≥ 1 (config ``cd.seeds``).
        markov_time: config ``cd.markov_time`` (> 0); higher gives fewer modules.
        two_level: two-level partition instead of a hierarchy.
        preferred_modules: config ``cd.preferred_modules``; ``None`` means no preference.
        num_trials: Infomap trials (best kept).
        flow_model: Infomap flow model (``"undirected"`` as in the paper).

    Returns:
        :class:`CommunityResult`. With no edges every label is isolated (``num_modules`` 0,
        ``codelength`` 0).
    """
    seed = _check_int(seed, "cd.seeds", 1)
    num_nodes = _check_int(num_nodes, "cd: number of labels", 1)
    num_trials = _check_int(num_trials, "cd.num_trials", 1)
    if preferred_modules is not None:
        preferred_modules = _check_int(preferred_modules, "cd.preferred_modules", 1)
    try:
        markov_time = float(markov_time)
    except (TypeError, ValueError):
        raise LeopartError(f"cd.markov_time: must be a positive number, got {markov_time!r}") from None
    if not np.isfinite(markov_time) or markov_time <= 0:
        raise LeopartError(f"cd.markov_time: must be a positive number, got {markov_time!r}")
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

    module_of = np.zeros(num_nodes, dtype=np.int32)
    if len(src) == 0:
        return CommunityResult(module_of, 0, 0.0, list(range(num_nodes)), seed, infomap.__version__)

    kwargs: dict[str, object] = dict(
        flow_model=flow_model,
        two_level=bool(two_level),
        seed=seed,
        markov_time=markov_time,
        num_trials=num_trials,
        silent=True,
    )
    if preferred_modules is not None:
        kwargs["preferred_number_of_modules"] = preferred_modules
    try:
        options = infomap.Options(**kwargs)
    except (TypeError, ValueError) as exc:
        raise LeopartError(f"cd: invalid Infomap option ({exc})") from None
    net = infomap.Network()
    net.add_links([(int(s), int(t), float(w)) for s, t, w in zip(src, dst, weight, strict=True)])
    result = infomap.run(net, options=options)
    modules = result.modules()  # leaf node id -> top-level module id (>= 1)
    ids = np.fromiter(modules.keys(), dtype=np.int64, count=len(modules))
    mods = np.fromiter(modules.values(), dtype=np.int64, count=len(modules))
    module_of[ids] = mods
    return CommunityResult(
        module_of=module_of,
        num_modules=int(result.num_top_modules),
        codelength=float(result.codelength),
        isolated=np.flatnonzero(module_of == 0).tolist(),
        seed=seed,
        version=infomap.__version__,
    )


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

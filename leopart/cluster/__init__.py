"""Clustering: faiss k-means and foreground clustering at evaluation resolution (spec §5)."""

from leopart.cluster.kmeans import (
    FgFit,
    KMeansParams,
    KMeansResult,
    assign_fg,
    eval_block_weights,
    fg_kmeans,
    fit_fg_kmeans,
    kmeans,
)

__all__ = [
    "FgFit",
    "KMeansParams",
    "KMeansResult",
    "assign_fg",
    "eval_block_weights",
    "fg_kmeans",
    "fit_fg_kmeans",
    "kmeans",
]

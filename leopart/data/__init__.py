"""Datasets: PVOC 2012 (authors' or official layout), the embedded synthetic toy set, downloads.

Every dataset is exposed through one interface, :class:`leopart.data.dataset.SplitIndex`
(ordered names, image paths, mask paths, class names), which stages persist as a Parquet manifest.
Submodules are imported lazily by their users (``from leopart.data.masks import load_mask``) so
that importing the package stays cheap.
"""

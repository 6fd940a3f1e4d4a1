"""What a person looks at: segmentations as image files and the figures of the Snakemake report.

* :mod:`leopart.report.segmentations` — per row of Table 5, every val image's segmentation at the
  image's own resolution as a palette PNG (class ids after matching), plus a few overlays.
* :mod:`leopart.report.figures` — the report's figures (Table 5 with per-class IoU, qualitative
  grid, CBFE threshold, co-occurrence graph, stage times) and tables (Infomap runs, provenance).
* :mod:`leopart.stages.report` (stages layer) — what the rules of ``workflow/rules/report.smk`` run.

Colours are the PASCAL VOC palette of :mod:`leopart.overlay` (one palette for every picture).
"""

#: [column title, segmentation row] of the qualitative grid, after the image and the ground truth
GRID_COLUMNS: list[list[str]] = [
    ["DINO k-means", "dino"],
    ["+Leopart k-means", "leopart"],
    ["CBFE foreground", "cbfe_foreground"],
    ["+CBFE", "cbfe"],
    ["+CD", "cd"],
    ["upper bound", "upper_bound"],
]

#: the grid column of the label-free +CD row, placed before the upper bound when that row is reported
LABEL_FREE_GRID_COLUMN: list[str] = ["+CD (label-free)", "cd_label_free"]

#: [Table 5 row, metric input name of workflow/rules/common.smk:table_inputs] of the rows that get
#: per-class IoU bars
TABLE_ROWS: list[list[str]] = [
    ["DINO", "dino"],
    ["+ Leopart", "leopart"],
    ["+ CBFE", "cbfe"],
    ["+ CD", "cd"],
    ["upper bound", "upper_bound"],
]

# Segmentations as image files (results/<run>/segmentations/<row>/) and the figures and tables of
# the HTML report (`make report`: snakemake report_figures, then snakemake --report).

segmentations_row_job = job_files("segmentations_row", "{row}")


rule segmentations_row:
    """One row's val segmentations at each image's resolution: palette PNGs (class ids after
    matching) and overlays of the first report.overlays images."""
    input:
        unpack(lambda wc: SEGMENTATION_ROWS[wc.row]),
        manifest=manifest_path("val"),
    output:
        folder=directory(f"{RUN_DIR}/segmentations/{{row}}"),
    log:
        segmentations_row_job.log,
    benchmark:
        segmentations_row_job.benchmark
    wildcard_constraints:
        row="|".join(SEGMENTATION_ROWS),
    conda:
        ENV
    threads: 1
    params:
        row=lambda wc: wc.row,
        run=0,
        overlays=REPORT_CONFIG["overlays"],
        class_names=CLASS_NAMES,
        ids=lambda wc: "foreground" if wc.row == "cbfe_foreground" else "label",
    script:
        "../scripts/segmentations.py"


rule segmentations:
    """Target: the segmentation folders of every row."""
    input:
        [segmentation_dir(row) for row in SEGMENTATION_ROWS],


report_table_job = job_files("report_table", "table5")
#: rows with a per-class IoU panel: the paper's, then every further +CBFE / +CD variant of the table
REPORT_TABLE_ROWS = TABLE_ROWS + [r for r in CBFE_ROWS + CD_ROWS if r[1] not in {n for _, n in TABLE_ROWS}]


rule report_table:
    """Table 5 with per-class IoU bars per row (class names from the metric JSONs)."""
    input:
        **{name: _TABLE_INPUTS[name] for _, name in REPORT_TABLE_ROWS},
        table=f"{RUN_DIR}/table5.csv",
    output:
        figure=report(
            f"{REPORT_DIR}/table5.png",
            labels={"name": "Table 5 and per-class IoU"},
            caption="../report/table5.rst",
            category="1. Table 5",
        ),
        table=report(
            f"{REPORT_DIR}/table5.csv",
            labels={"name": "Table 5 (CSV)"},
            caption="../report/table5_csv.rst",
            category="1. Table 5",
        ),
        per_class=report(
            f"{REPORT_DIR}/per_class_iou.csv",
            labels={"name": "per-class IoU (CSV)"},
            caption="../report/per_class.rst",
            category="1. Table 5",
        ),
    log:
        report_table_job.log,
    benchmark:
        report_table_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        # per-class IoU panels (none without masks: nothing to score)
        rows=REPORT_TABLE_ROWS if HAS_MASKS else [],
        class_names=CLASS_NAMES,
    script:
        "../scripts/report_table.py"


report_qualitative_job = job_files("report_qualitative", "grid")


rule report_qualitative:
    """Image | ground truth | every row's segmentation for the val images of report.images."""
    input:
        **{row: segmentation_dir(row) for _, row in QUALITATIVE_COLUMNS},
        manifest=manifest_path("val"),
    output:
        figure=report(
            f"{REPORT_DIR}/qualitative.png",
            labels={"name": "qualitative grid"},
            caption="../report/qualitative.rst",
            category="2. Segmentations",
        ),
    log:
        report_qualitative_job.log,
    benchmark:
        report_qualitative_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        images=REPORT_CONFIG["images"],
        columns=QUALITATIVE_COLUMNS,
        foreground=["cbfe_foreground"],
        # without masks the PNGs hold cluster / community ids, named as such in the legend
        class_names=CLASS_NAMES if HAS_MASKS else [f"id {i}" for i in range(255)],
        background_class=DATASET["background_class"],
        ignore_index=DATASET["ignore_index"],
    script:
        "../scripts/report_qualitative.py"


report_cbfe_job = job_files("report_cbfe", "cbfe")


rule report_cbfe:
    """Sorted train cluster precisions, the cut scores and the chosen CBFE threshold."""
    input:
        clusters=_beside(_CBFE_METRICS, "clusters.parquet", up=1),
        threshold=_beside(_CBFE_METRICS, "threshold.json", up=1),
    output:
        figure=report(
            f"{REPORT_DIR}/cbfe.png",
            labels={"name": "CBFE threshold"},
            caption="../report/cbfe.rst",
            category="3. CBFE",
        ),
    log:
        report_cbfe_job.log,
    benchmark:
        report_cbfe_job.benchmark
    conda:
        ENV
    threads: 1
    script:
        "../scripts/report_cbfe.py"


report_cd_job = job_files("report_cd", "cd")


rule report_cd:
    """The co-occurrence graph coloured by Infomap module, and the per-run Infomap table."""
    input:
        edges=_beside(_CD_METRICS, "edges.parquet", up=1),
        communities=_beside(_CD_METRICS, "communities.parquet"),
        runs=_beside(_CD_METRICS, "infomap_runs.parquet"),
        metrics=_CD_METRICS,
    output:
        figure=report(
            f"{REPORT_DIR}/cd_graph.png",
            labels={"name": "co-occurrence graph by Infomap module"},
            caption="../report/cd_graph.rst",
            category="4. Community detection",
        ),
        runs=report(
            f"{REPORT_DIR}/infomap_runs.csv",
            labels={"name": "Infomap runs"},
            caption="../report/infomap_runs.rst",
            category="4. Community detection",
        ),
    log:
        report_cd_job.log,
    benchmark:
        report_cd_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        class_names=CLASS_NAMES,
    script:
        "../scripts/report_cd.py"


report_provenance_job = job_files("report_provenance", "provenance")


rule report_provenance:
    """Code and library versions, checksums of the metric artefacts, the completed config."""
    input:
        table=f"{RUN_DIR}/table5.csv",
    output:
        table=report(
            f"{REPORT_DIR}/provenance.csv",
            labels={"name": "provenance"},
            caption="../report/provenance.rst",
            category="6. Provenance",
        ),
    log:
        report_provenance_job.log,
    benchmark:
        report_provenance_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        config=config,
    script:
        "../scripts/report_provenance.py"


REPORT_FIGURES = [
    *rules.report_table.output,
    *rules.report_qualitative.output,
    *rules.report_cbfe.output,
    *rules.report_cd.output,
    *rules.report_provenance.output,
]

report_resources_job = job_files("report_resources", "resources")


rule report_resources:
    """Stage times and peak memory of every job, from the benchmark files (read last)."""
    input:
        REPORT_FIGURES,
    output:
        figure=report(
            f"{REPORT_DIR}/resources.png",
            labels={"name": "stage times and memory"},
            caption="../report/resources.rst",
            category="5. Resources",
        ),
        table=report(
            f"{REPORT_DIR}/benchmarks.csv",
            labels={"name": "benchmarks per job (CSV)"},
            caption="../report/benchmarks.rst",
            category="5. Resources",
        ),
    log:
        report_resources_job.log,
    benchmark:
        report_resources_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        benchmarks=f"{RUN_DIR}/benchmarks",
    script:
        "../scripts/report_resources.py"


rule report_figures:
    """Target: every figure and table of the HTML report, and the segmentation folders."""
    input:
        REPORT_FIGURES,
        rules.report_resources.output,
        [segmentation_dir(row) for row in SEGMENTATION_ROWS],

# Table 5: one row per line of the paper's table, aggregated from the metric artefacts.

table5_job = job_files("table5", "table5")


rule table5:
    """Table 5 (mean ± std over every seed), its JSON sidecar (spread decomposition, paired
    comparisons) and comparisons.csv, from every row's metric artefacts."""
    input:
        **table_inputs(),
    output:
        table=f"{RUN_DIR}/table5.csv",
        comparisons=f"{RUN_DIR}/comparisons.csv",
    log:
        table5_job.log,
    benchmark:
        table5_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        labels={row: MODELS[m].get("label", m) for row, m in ROW_MODELS.items()},
        dataset=DATASET["kind"],
        voc2012=bool(PVOC_CONFIG.get("voc2012")),
        derived=DERIVED,
        k_overcluster=OVERCLUSTER_CONFIG["k"],
        k_fg=FG_CLUSTERING_CONFIG["k"],
        k_cd=CD_CONFIG["k"],
        seeds=table_seeds(),
        cd_rows=CD_ROWS,
        cbfe_rows=CBFE_ROWS,
        has_labels=HAS_MASKS,
    script:
        "../scripts/table5.py"


rule default_table:
    """results/table5.csv: the table of the current config (the toy default unless overridden)."""
    input:
        table=f"{RUN_DIR}/table5.csv",
    output:
        table="results/table5.csv",
    log:
        "results/logs/default_table.log",
    conda:
        ENV
    threads: 1
    shell:
        "(cp {input.table} {output.table}.tmp && mv {output.table}.tmp {output.table}) 2> {log}"

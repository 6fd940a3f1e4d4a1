# Table 5: one row per line of the paper's table, aggregated from the metric artefacts.

rule table5:
    """Collect every row's metric artefacts into results/<run>/table5.csv (+ JSON sidecar)."""
    input:
        **table_inputs(),
    output:
        table=f"{R}/table5.csv",
    params:
        labels={row: MODELS[m].get("label", m) for row, m in ROW_MODELS.items()},
        dataset=DATASET["kind"],
        k_overcluster=OC["k"],
        k_fg=FG["k"],
        k_cd=CD["k"],
    log:
        logp("table5", "table5"),
    benchmark:
        benchp("table5", "table5")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/table5.py"


rule default_table:
    """results/table5.csv: the table of the current config (the toy default unless overridden)."""
    input:
        table=f"{R}/table5.csv",
    output:
        table="results/table5.csv",
    log:
        "results/logs/default_table.log",
    threads: 1
    conda:
        ENV
    shell:
        "cp {input.table} {output.table}.tmp && mv {output.table}.tmp {output.table} 2> {log}"

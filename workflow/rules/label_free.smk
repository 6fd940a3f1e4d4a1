# Label-free choices (leopart/label_free.py): the CD setting chosen on train without ground truth,
# then Infomap with it and the val scoring of +CD. The label-free CBFE threshold is rule cbfe on a
# CBFE seed <s>-labelfree (common.smk LABEL_FREE_SEED).

cd_label_free_job = job_files("cd_label_free", "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}")


rule cd_label_free:
    """(weight threshold, markov time) of cd.search with the highest modularity of the Infomap
    partitions on the train+val co-occurrence graph (no labels), then row +CD with that setting."""
    input:
        matrix=f"{FG_KMEANS_DIR_PATTERN}/cooccurrence.npy",
        labels=f"{FG_KMEANS_DIR_PATTERN}/val_labels.npy",
        gt=gt_path("val"),
        infomap_env=INFOMAP_ENV_INPUT,
    output:
        results=f"{FG_KMEANS_DIR_PATTERN}/cd_label_free/search.parquet",
        selection=f"{FG_KMEANS_DIR_PATTERN}/cd_label_free/selection.json",
        edges=f"{FG_KMEANS_DIR_PATTERN}/cd_label_free/edges.parquet",
        communities=f"{FG_KMEANS_DIR_PATTERN}/cd_label_free/communities.parquet",
        runs=f"{FG_KMEANS_DIR_PATTERN}/cd_label_free/infomap_runs.parquet",
        merged=f"{FG_KMEANS_DIR_PATTERN}/cd_label_free/val_merged.npy",
        metrics=f"{FG_KMEANS_DIR_PATTERN}/cd_label_free/metrics.json",
    log:
        cd_label_free_job.log,
    benchmark:
        cd_label_free_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        grid=CD_CONFIG["search"],
        seeds=CD_CONFIG["seeds"],
        preferred_modules=CD_CONFIG["preferred_modules"],
        two_level=CD_CONFIG["two_level"],
        num_trials=CD_CONFIG["num_trials"],
        num_classes=NUM_CLASSES,
        class_names=CLASS_NAMES,
        too_many_modules=CD_CONFIG["too_many_modules"],
        infomap=CD_CONFIG["infomap"],
    script:
        "../scripts/cd_label_free.py"

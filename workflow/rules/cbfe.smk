# CBFE (spec §7) and foreground-only clustering for the CBFE row and the K = k plus 1 upper bound.


kmeans_trainval_job = job_files("kmeans_trainval", "{model}_k{k}_seed{seed}")


rule kmeans_trainval:
    """k-means (spherical by default) on train and val PCA tokens at token resolution (spec §5.2)."""
    input:
        train=lambda wc: reduced_path(wc.model, "trainval", "train"),
        val=lambda wc: reduced_path(wc.model, "trainval", "val"),
    output:
        train=f"{RUN_DIR}/kmeans/{{model}}/trainval_k{{k}}_seed{{seed}}/train_labels.npy",
        val=f"{RUN_DIR}/kmeans/{{model}}/trainval_k{{k}}_seed{{seed}}/val_labels.npy",
    log:
        kmeans_trainval_job.log,
    benchmark:
        kmeans_trainval_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        kmeans=config["kmeans"],
        spherical=CBFE_CONFIG["spherical"],
    script:
        "../scripts/kmeans_trainval.py"


cbfe_job = job_files("cbfe", "{model}_k{cbfe_k}_seed{cbfe_seed}")


rule cbfe:
    """Cluster attention precision, train-GT threshold search, foreground masks per split."""
    input:
        # a label-free CBFE seed (<s>-labelfree) thresholds the clustering of seed <s>
        train_labels=lambda wc: kmeans_trainval_labels(wc, "train"),
        val_labels=lambda wc: kmeans_trainval_labels(wc, "val"),
        train_attn=attn_mask_path("train"),
        val_attn=attn_mask_path("val"),
        train_gt=gt_path("train"),
    output:
        train_fg=f"{CBFE_DIR_PATTERN}/train_fg.npy",
        val_fg=f"{CBFE_DIR_PATTERN}/val_fg.npy",
        clusters=f"{CBFE_DIR_PATTERN}/clusters.parquet",
        threshold=f"{CBFE_DIR_PATTERN}/threshold.json",
    log:
        cbfe_job.log,
    benchmark:
        cbfe_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        cut_range=CBFE_CONFIG["cut_range"],
        round_step=CBFE_CONFIG["round_step"],
        threshold=CBFE_CONFIG["threshold"],
        eval_size=DATASET["ground_truth"]["eval_size"],
        label_free=lambda wc: wc.cbfe_seed.endswith(LABEL_FREE_SEED) or not HAS_MASKS,
        has_labels=HAS_MASKS,
    script:
        "../scripts/cbfe.py"


fg_kmeans_job = job_files("fg_kmeans", "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}")


rule fg_kmeans:
    """k-means on foreground tokens weighted as at eval resolution; background label = k."""
    input:
        train=lambda wc: reduced_path(wc.model, "trainval", "train"),
        val=lambda wc: reduced_path(wc.model, "trainval", "val"),
        train_fg=f"{CBFE_DIR_PATTERN}/train_fg.npy",
        val_fg=f"{CBFE_DIR_PATTERN}/val_fg.npy",
    output:
        train=f"{FG_KMEANS_DIR_PATTERN}/train_labels.npy",
        val=f"{FG_KMEANS_DIR_PATTERN}/val_labels.npy",
    log:
        fg_kmeans_job.log,
    benchmark:
        fg_kmeans_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        kmeans=config["kmeans"],
        eval_size=DATASET["ground_truth"]["eval_size"],
    script:
        "../scripts/fg_kmeans.py"


fg_score_job = job_files("fg_score", "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}_{matching}")


rule fg_score:
    """The CBFE row (Hungarian) or the upper bound (many-to-one) of a fg clustering on val."""
    input:
        labels=f"{FG_KMEANS_DIR_PATTERN}/val_labels.npy",
        gt=gt_path("val"),
    output:
        metrics=f"{FG_KMEANS_DIR_PATTERN}/{{matching}}.json",
    log:
        fg_score_job.log,
    benchmark:
        fg_score_job.benchmark
    wildcard_constraints:
        matching=r"hungarian|many_to_one",
    conda:
        ENV
    threads: 1
    params:
        num_classes=NUM_CLASSES,
        class_names=CLASS_NAMES,
        val_limit=None,
        matching=lambda wc: wc.matching,
    script:
        "../scripts/score_labels.py"

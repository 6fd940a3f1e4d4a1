# Community detection (spec §8): co-occurrence graph of the overclustering, Infomap, scoring.


cooccurrence_job = job_files("cooccurrence", "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}")


rule cooccurrence:
    """Row-normalised co-occurrence of labels over train+val maps (16 GLCM offsets)."""
    input:
        train=f"{FG_KMEANS_DIR_PATTERN}/train_labels.npy",
        val=f"{FG_KMEANS_DIR_PATTERN}/val_labels.npy",
    output:
        matrix=f"{FG_KMEANS_DIR_PATTERN}/cooccurrence.npy",
        appearances=f"{FG_KMEANS_DIR_PATTERN}/appearances.npy",
    log:
        cooccurrence_job.log,
    benchmark:
        cooccurrence_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        eval_size=DATASET["ground_truth"]["eval_size"],
    script:
        "../scripts/cooccurrence.py"


cd_edges_job = job_files("cd_edges", "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}_wt{weight_threshold}")


rule cd_edges:
    """Undirected edges with both directions >= weight threshold; weight = the smaller one."""
    input:
        matrix=f"{FG_KMEANS_DIR_PATTERN}/cooccurrence.npy",
    output:
        edges=f"{CD_EDGES_DIR_PATTERN}/edges.parquet",
    log:
        cd_edges_job.log,
    benchmark:
        cd_edges_job.benchmark
    conda:
        ENV
    threads: 1
    script:
        "../scripts/cd_edges.py"


infomap_env_job = job_files("infomap_env", f"infomap-{AUTHORS_VERSION}")


rule infomap_env:
    """infomap 2.2.0 (cd.infomap: authors) built once with pip into cd.infomap_envs; its record."""
    output:
        record=INFOMAP_ENV_RECORD,
    log:
        infomap_env_job.log,
    benchmark:
        infomap_env_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        version=AUTHORS_VERSION,
        root=CD_CONFIG["infomap_envs"],
    script:
        "../scripts/infomap_env.py"


infomap_job = job_files(
    "infomap",
    "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}_wt{weight_threshold}_mt{markov_time}_pm{preferred_modules}_{infomap_behaviour}",
)


rule infomap:
    """One Infomap run per seed -> communities (run, node, module) + per-run statistics."""
    input:
        edges=f"{CD_EDGES_DIR_PATTERN}/edges.parquet",
        matrix=f"{FG_KMEANS_DIR_PATTERN}/cooccurrence.npy",
        infomap_env=infomap_env_input,
    output:
        communities=f"{INFOMAP_DIR_PATTERN}/communities.parquet",
        runs=f"{INFOMAP_DIR_PATTERN}/infomap_runs.parquet",
    log:
        infomap_job.log,
    benchmark:
        infomap_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        seeds=lambda wildcards: infomap_seeds(wildcards.infomap_behaviour),
        two_level=CD_CONFIG["two_level"],
        num_trials=CD_CONFIG["num_trials"],
        infomap=lambda wildcards: wildcards.infomap_behaviour,
    script:
        "../scripts/infomap.py"


cd_score_job = job_files(
    "cd_score",
    "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}_wt{weight_threshold}_mt{markov_time}_pm{preferred_modules}_{infomap_behaviour}",
)


rule cd_score:
    """Merge val labels into communities per run (token maps) and score with Hungarian."""
    input:
        communities=f"{INFOMAP_DIR_PATTERN}/communities.parquet",
        runs=f"{INFOMAP_DIR_PATTERN}/infomap_runs.parquet",
        labels=f"{FG_KMEANS_DIR_PATTERN}/val_labels.npy",
        gt=gt_path("val"),
    output:
        merged=f"{INFOMAP_DIR_PATTERN}/val_merged.npy",
        metrics=f"{INFOMAP_DIR_PATTERN}/metrics.json",
    log:
        cd_score_job.log,
    benchmark:
        cd_score_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        num_classes=NUM_CLASSES,
        class_names=CLASS_NAMES,
        too_many_modules=CD_CONFIG["too_many_modules"],
    script:
        "../scripts/cd_score.py"


cd_search_job = job_files("cd_search", "{model}_k{cbfe_k}_seed{cbfe_seed}_fg_k{k}_seed{seed}")


rule cd_search:
    """Model selection of (weight threshold, markov time) on train with train GT (spec §8.6)."""
    input:
        labels=f"{FG_KMEANS_DIR_PATTERN}/train_labels.npy",
        matrix=f"{FG_KMEANS_DIR_PATTERN}/cooccurrence.npy",
        gt=gt_path("train"),
        infomap_env=INFOMAP_ENV_INPUT,
    output:
        results=f"{FG_KMEANS_DIR_PATTERN}/cd_search/results.parquet",
        best=f"{FG_KMEANS_DIR_PATTERN}/cd_search/best.json",
    log:
        cd_search_job.log,
    benchmark:
        cd_search_job.benchmark
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
        infomap=CD_CONFIG["infomap"],
    script:
        "../scripts/cd_search.py"

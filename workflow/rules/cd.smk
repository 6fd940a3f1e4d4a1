# Community detection (spec §8): co-occurrence graph of the overclustering, Infomap, scoring.


rule cooccurrence:
    """Row-normalised co-occurrence of labels over train+val maps (16 GLCM offsets)."""
    input:
        train=f"{FGK_PAT}/train_labels.npy",
        val=f"{FGK_PAT}/val_labels.npy",
    output:
        matrix=f"{FGK_PAT}/cooccurrence.npy",
        appearances=f"{FGK_PAT}/appearances.npy",
    params:
        eval_size=DATASET["ground_truth"]["eval_size"],
    log:
        logp("cooccurrence", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}"),
    benchmark:
        benchp("cooccurrence", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/cooccurrence.py"


rule cd_edges:
    """Undirected edges with both directions >= weight threshold; weight = the smaller one."""
    input:
        matrix=f"{FGK_PAT}/cooccurrence.npy",
    output:
        edges=f"{CD_PAT}/edges.parquet",
    log:
        logp("cd_edges", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_wt{wt}"),
    benchmark:
        benchp("cd_edges", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_wt{wt}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/cd_edges.py"


rule infomap:
    """One Infomap run per seed -> communities (run, node, module) + per-run statistics."""
    input:
        edges=f"{CD_PAT}/edges.parquet",
        matrix=f"{FGK_PAT}/cooccurrence.npy",
    output:
        communities=f"{IM_PAT}/communities.parquet",
        runs=f"{IM_PAT}/infomap_runs.parquet",
    params:
        seeds=CD["seeds"],
        two_level=CD["two_level"],
        num_trials=CD["num_trials"],
    log:
        logp("infomap", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_wt{wt}_mt{mt}_pm{pm}"),
    benchmark:
        benchp("infomap", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_wt{wt}_mt{mt}_pm{pm}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/infomap.py"


rule cd_score:
    """Merge val labels into communities per run (token maps) and score with Hungarian."""
    input:
        communities=f"{IM_PAT}/communities.parquet",
        labels=f"{FGK_PAT}/val_labels.npy",
        gt=gt_path("val"),
    output:
        merged=f"{IM_PAT}/val_merged.npy",
        metrics=f"{IM_PAT}/metrics.json",
    params:
        num_classes=NUM_CLASSES,
        too_many_modules=CD["too_many_modules"],
    log:
        logp("cd_score", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_wt{wt}_mt{mt}_pm{pm}"),
    benchmark:
        benchp("cd_score", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_wt{wt}_mt{mt}_pm{pm}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/cd_score.py"


rule cd_search:
    """Model selection of (weight threshold, markov time) on train with train GT (spec §8.6)."""
    input:
        labels=f"{FGK_PAT}/train_labels.npy",
        matrix=f"{FGK_PAT}/cooccurrence.npy",
        gt=gt_path("train"),
    output:
        results=f"{FGK_PAT}/cd_search/results.parquet",
        best=f"{FGK_PAT}/cd_search/best.json",
    params:
        grid=CD["search"],
        seeds=CD["seeds"],
        preferred_modules=CD.get("preferred_modules"),
        two_level=CD["two_level"],
        num_trials=CD["num_trials"],
        num_classes=NUM_CLASSES,
    log:
        logp("cd_search", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}"),
    benchmark:
        benchp("cd_search", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/cd_search.py"

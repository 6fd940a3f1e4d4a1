# CBFE (spec §7) and foreground-only clustering for the CBFE row and the K = k plus 1 upper bound.


rule kmeans_trainval:
    """k-means (spherical by default) on train and val PCA tokens at token resolution (spec §5.2)."""
    input:
        train=lambda wc: reduced_path(wc.model, "trainval", "train"),
        val=lambda wc: reduced_path(wc.model, "trainval", "val"),
    output:
        train=f"{R}/kmeans/{{model}}/trainval_k{{k}}_seed{{seed}}/train_labels.npy",
        val=f"{R}/kmeans/{{model}}/trainval_k{{k}}_seed{{seed}}/val_labels.npy",
    params:
        kmeans=config["kmeans"],
        spherical=CB["spherical"],
    log:
        logp("kmeans_trainval", "{model}_k{k}_seed{seed}"),
    benchmark:
        benchp("kmeans_trainval", "{model}_k{k}_seed{seed}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/kmeans_trainval.py"


rule cbfe:
    """Cluster attention precision, train-GT threshold search, foreground masks per split."""
    input:
        train_labels=f"{R}/kmeans/{{model}}/trainval_k{{ck}}_seed{{cs}}/train_labels.npy",
        val_labels=f"{R}/kmeans/{{model}}/trainval_k{{ck}}_seed{{cs}}/val_labels.npy",
        train_attn=attn_mask_path("train"),
        val_attn=attn_mask_path("val"),
        train_gt=gt_path("train"),
    output:
        train_fg=f"{CBFE_PAT}/train_fg.npy",
        val_fg=f"{CBFE_PAT}/val_fg.npy",
        clusters=f"{CBFE_PAT}/clusters.parquet",
        threshold=f"{CBFE_PAT}/threshold.json",
    params:
        cut_range=CB["cut_range"],
        round_step=CB["round_step"],
        threshold=CB.get("threshold"),
        eval_size=DATASET["ground_truth"]["eval_size"],
    log:
        logp("cbfe", "{model}_k{ck}_seed{cs}"),
    benchmark:
        benchp("cbfe", "{model}_k{ck}_seed{cs}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/cbfe.py"


rule fg_kmeans:
    """k-means on foreground tokens weighted as at eval resolution; background label = k."""
    input:
        train=lambda wc: reduced_path(wc.model, "trainval", "train"),
        val=lambda wc: reduced_path(wc.model, "trainval", "val"),
        train_fg=f"{CBFE_PAT}/train_fg.npy",
        val_fg=f"{CBFE_PAT}/val_fg.npy",
    output:
        train=f"{FGK_PAT}/train_labels.npy",
        val=f"{FGK_PAT}/val_labels.npy",
    params:
        kmeans=config["kmeans"],
        eval_size=DATASET["ground_truth"]["eval_size"],
    log:
        logp("fg_kmeans", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}"),
    benchmark:
        benchp("fg_kmeans", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/fg_kmeans.py"


rule fg_score:
    """The CBFE row (Hungarian) or the upper bound (many-to-one) of a fg clustering on val."""
    input:
        labels=f"{FGK_PAT}/val_labels.npy",
        gt=gt_path("val"),
    output:
        metrics=f"{FGK_PAT}/{{matching}}.json",
    wildcard_constraints:
        matching=r"hungarian|many_to_one",
    params:
        num_classes=NUM_CLASSES,
        val_limit=None,
    log:
        logp("fg_score", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_{matching}"),
    benchmark:
        benchp("fg_score", "{model}_k{ck}_seed{cs}_fg_k{k}_seed{seed}_{matching}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/score_labels.py"

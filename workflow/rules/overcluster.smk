# Rows DINO and +Leopart: k-means (K = number of classes) on val tokens, Hungarian mIoU.


rule overcluster_kmeans:
    """k-means on val PCA tokens -> labels (N, h, w) int32 (spec §5.4)."""
    input:
        val=lambda wc: reduced_path(wc.model, wc.fit, "val"),
    output:
        labels=f"{R}/overcluster/{{model}}/{{fit}}/k{{k}}_seed{{seed}}/val_labels.npy",
    params:
        kmeans=config["kmeans"],
        val_limit=config["overcluster"].get("val_limit"),
        spherical=False,
    log:
        logp("overcluster_kmeans", "{model}_{fit}_k{k}_seed{seed}"),
    benchmark:
        benchp("overcluster_kmeans", "{model}_{fit}_k{k}_seed{seed}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/overcluster_kmeans.py"


rule overcluster_score:
    """Token labels -> eval resolution (torch nearest) -> Hungarian mIoU against val GT."""
    input:
        labels=rules.overcluster_kmeans.output.labels,
        gt=gt_path("val"),
    output:
        metrics=f"{R}/overcluster/{{model}}/{{fit}}/k{{k}}_seed{{seed}}/metrics.json",
    params:
        num_classes=NUM_CLASSES,
        val_limit=config["overcluster"].get("val_limit"),
        matching="hungarian",
    log:
        logp("overcluster_score", "{model}_{fit}_k{k}_seed{seed}"),
    benchmark:
        benchp("overcluster_score", "{model}_{fit}_k{k}_seed{seed}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/score_labels.py"

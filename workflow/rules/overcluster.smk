# Rows DINO and +Leopart: k-means (K = number of classes) on val tokens, Hungarian mIoU.


overcluster_kmeans_job = job_files("overcluster_kmeans", "{model}_{fit}_k{k}_seed{seed}")


rule overcluster_kmeans:
    """k-means on val PCA tokens -> labels (N, h, w) int32 (spec §5.4)."""
    input:
        val=lambda wc: reduced_path(wc.model, wc.fit, "val"),
    output:
        labels=f"{RUN_DIR}/overcluster/{{model}}/{{fit}}/k{{k}}_seed{{seed}}/val_labels.npy",
    log:
        overcluster_kmeans_job.log,
    benchmark:
        overcluster_kmeans_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        kmeans=config["kmeans"],
        val_limit=lambda wc: val_limit_of(wc.fit),
        spherical=False,
    script:
        "../scripts/overcluster_kmeans.py"


overcluster_score_job = job_files("overcluster_score", "{model}_{fit}_k{k}_seed{seed}")


rule overcluster_score:
    """Token labels -> eval resolution (torch nearest) -> Hungarian mIoU against val GT."""
    input:
        labels=rules.overcluster_kmeans.output.labels,
        gt=gt_path("val"),
    output:
        metrics=f"{RUN_DIR}/overcluster/{{model}}/{{fit}}/k{{k}}_seed{{seed}}/metrics.json",
    log:
        overcluster_score_job.log,
    benchmark:
        overcluster_score_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        num_classes=NUM_CLASSES,
        class_names=CLASS_NAMES,
        val_limit=lambda wc: val_limit_of(wc.fit),
        matching="hungarian",
    script:
        "../scripts/score_labels.py"

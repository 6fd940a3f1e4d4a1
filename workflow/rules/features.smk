# Backbone inference (tokens + last-block CLS attention), imported embeddings/attention,
# attention foreground masks, and standardisation + PCA.


fetch_weights_job = job_files("fetch_weights", "{model}")


rule fetch_weights:
    """Download a model's checkpoint; verify (or record) its SHA-256 in a JSON sidecar."""
    output:
        weights="resources/weights/{model}.pth",
        checksum="resources/weights/{model}.pth.json",
    log:
        fetch_weights_job.log,
    benchmark:
        fetch_weights_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        url=lambda wc: MODELS[wc.model]["weights"].get("url"),
        sha256=lambda wc: MODELS[wc.model]["weights"].get("sha256"),
    script:
        "../scripts/fetch_weights.py"


if SHARD_SIZE is None:
    extract_features_job = job_files("extract_features", "{model}_{split}")

    rule extract_features:
        """Final-norm patch tokens (N, h, w, D) and last-block CLS attention (N, heads, h*w)."""
        input:
            manifest=manifest_path("{split}"),
            weights=lambda wc: weights_file(wc.model),
        output:
            tokens=tokens_path("{model}", "{split}"),
            cls_attn=cls_attn_path("{model}", "{split}"),
        log:
            extract_features_job.log,
        benchmark:
            extract_features_job.benchmark
        conda:
            ENV
        threads: THREADS
        resources:
            gpu=gpu_resources(),
        params:
            **extraction_params(),
            model=lambda wc: MODELS[wc.model],
        script:
            "../scripts/extract_features.py"

else:
    extract_features_shard_job = job_files("extract_features", "{model}_{split}_shard{shard}")

    rule extract_features_shard:
        """Tokens and CLS attention of images shard*shard_size ... of a split (one scatter job)."""
        input:
            manifest=manifest_path("{split}"),
            weights=lambda wc: weights_file(wc.model),
        output:
            tokens=temp(f"{RUN_DIR}/features/{{model}}/shards/{{split}}_{{shard}}_tokens.npy"),
            cls_attn=temp(f"{RUN_DIR}/features/{{model}}/shards/{{split}}_{{shard}}_cls_attn.npy"),
        log:
            extract_features_shard_job.log,
        benchmark:
            extract_features_shard_job.benchmark
        wildcard_constraints:
            shard=r"\d+",
        conda:
            ENV
        threads: THREADS
        resources:
            gpu=gpu_resources(),
        params:
            **extraction_params(),
            model=lambda wc: MODELS[wc.model],
            shard_size=SHARD_SIZE,
        script:
            "../scripts/extract_features.py"

    merge_features_job = job_files("merge_features", "{model}_{split}")

    rule merge_features:
        """Gather: the shards concatenated into the split's (N, h, w, D) tokens and CLS attention
        (byte-identical to an unsharded extraction)."""
        input:
            manifest=manifest_path("{split}"),
            tokens=shard_files("tokens"),
            cls_attn=shard_files("cls_attn"),
        output:
            tokens=tokens_path("{model}", "{split}"),
            cls_attn=cls_attn_path("{model}", "{split}"),
        log:
            merge_features_job.log,
        benchmark:
            merge_features_job.benchmark
        conda:
            ENV
        threads: 1
        script:
            "../scripts/merge_features.py"


import_embeddings_job = job_files("import_embeddings", "{model}_{split}")


rule import_embeddings:
    """Pre-computed embeddings (raw or reduced) converted chunk by chunk to (N, h, w, D) .npy
    (float16 kept, other dtypes float32); models importing the same files share one import."""
    input:
        embeddings=lambda wc: embeddings_of(wc.model)[wc.split],
        manifest=manifest_path("{split}"),
    output:
        tokens=f"{RUN_DIR}/embeddings/{{model}}/{{split}}.npy",
    log:
        import_embeddings_job.log,
    benchmark:
        import_embeddings_job.benchmark
    conda:
        ENV
    threads: 1
    script:
        "../scripts/import_embeddings.py"


attention_masks_job = job_files("attention_masks", "{model}_{split}")


rule attention_masks:
    """CLS attention -> blur -> keep the top tokens with `threshold` of the mass -> drop specks."""
    input:
        cls_attn=cls_attn_path("{model}", "{split}"),
    output:
        masks=f"{RUN_DIR}/attention/{{model}}/{{split}}.npy",
    log:
        attention_masks_job.log,
    benchmark:
        attention_masks_job.benchmark
    conda:
        ENV
    threads: THREADS
    params:
        threshold=config["attention"]["threshold"],
        blur_sigma=config["attention"]["blur_sigma"],
        min_component=config["attention"]["min_component"],
    script:
        "../scripts/attention_masks.py"


import_attention_masks_job = job_files("import_attention_masks", "{split}")


# attention/files/ is the imported masks' folder, never a model's (several CBFE jobs requesting
# it, e.g. a label-free seed beside the paper's, would otherwise find both rules)
ruleorder: import_attention_masks > attention_masks


rule import_attention_masks:
    """The authors' attn_dino_{train,val}.pt (or .npy) as (N, h, w) uint8."""
    input:
        masks=lambda wc: ATTENTION_FILES[wc.split],
        manifest=manifest_path("{split}"),
    output:
        masks=f"{RUN_DIR}/attention/files/{{split}}.npy",
    log:
        import_attention_masks_job.log,
    benchmark:
        import_attention_masks_job.benchmark
    conda:
        ENV
    threads: 1
    script:
        "../scripts/import_attention_masks.py"


pca_val_job = job_files("pca", "{model}_{fit}")


rule pca_val:
    """Rows DINO/+Leopart: standardise + PCA fitted on val (optionally its first N images)."""
    input:
        val=lambda wc: raw_tokens(wc.model, "val"),
    output:
        val=f"{RUN_DIR}/pca/{{model}}/{{fit}}/val.npy",
        model=f"{RUN_DIR}/pca/{{model}}/{{fit}}/pca.npz",
    log:
        pca_val_job.log,
    benchmark:
        pca_val_job.benchmark
    wildcard_constraints:
        fit=r"val|val-first\d+",
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        pca=config["pca"],
        fit=lambda wc: wc.fit,
        val_limit=lambda wc: val_limit_of(wc.fit),
    script:
        "../scripts/pca.py"


pca_trainval_job = job_files("pca", "{model}_trainval")


rule pca_trainval:
    """Rows +CBFE/+CD/upper bound: standardise + PCA fitted on train and val together."""
    input:
        train=lambda wc: raw_tokens(wc.model, "train"),
        val=lambda wc: raw_tokens(wc.model, "val"),
    output:
        train=f"{RUN_DIR}/pca/{{model}}/trainval/train.npy",
        val=f"{RUN_DIR}/pca/{{model}}/trainval/val.npy",
        model=f"{RUN_DIR}/pca/{{model}}/trainval/pca.npz",
    log:
        pca_trainval_job.log,
    benchmark:
        pca_trainval_job.benchmark
    conda:
        ENV
    threads: 1  # single-threaded BLAS/faiss by design: bytes independent of --cores (leopart.numerics)
    params:
        pca=config["pca"],
        fit="trainval",
        val_limit=None,
    script:
        "../scripts/pca.py"

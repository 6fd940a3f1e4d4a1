# Backbone inference (tokens + last-block CLS attention), imported embeddings/attention,
# attention foreground masks, and standardisation + PCA.


rule fetch_weights:
    """Download a model's checkpoint; verify (or record) its SHA-256 in a JSON sidecar."""
    output:
        weights="resources/weights/{model}.pth",
        checksum="resources/weights/{model}.pth.json",
    params:
        url=lambda wc: MODELS[wc.model]["weights"].get("url"),
        sha256=lambda wc: MODELS[wc.model]["weights"].get("sha256"),
    log:
        logp("fetch_weights", "{model}"),
    benchmark:
        benchp("fetch_weights", "{model}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/fetch_weights.py"


rule extract_features:
    """Final-norm patch tokens (N, h, w, D) and last-block CLS attention (N, heads, h*w)."""
    input:
        manifest=manifest_path("{split}"),
        weights=lambda wc: weights_file(wc.model),
    output:
        tokens=f"{R}/features/{{model}}/{{split}}_tokens.npy",
        cls_attn=f"{R}/features/{{model}}/{{split}}_cls_attn.npy",
    params:
        model=lambda wc: MODELS[wc.model],
        input_size=config["features"]["input_size"],
        batch_size=config["features"]["batch_size"],
        device=config["features"]["device"],
        num_workers=config["features"]["num_workers"],
    log:
        logp("extract_features", "{model}_{split}"),
    benchmark:
        benchp("extract_features", "{model}_{split}")
    threads: THREADS
    resources:
        gpu=gpu_resources(),
    conda:
        ENV
    script:
        "../scripts/extract_features.py"


rule import_embeddings:
    """Pre-computed embeddings (raw or reduced) converted to (N, h, w, D) float32 .npy."""
    input:
        embeddings=lambda wc: embeddings_of(wc.model)[wc.split],
        manifest=manifest_path("{split}"),
    output:
        tokens=f"{R}/embeddings/{{model}}/{{split}}.npy",
    log:
        logp("import_embeddings", "{model}_{split}"),
    benchmark:
        benchp("import_embeddings", "{model}_{split}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/import_embeddings.py"


rule attention_masks:
    """CLS attention -> blur -> keep the top tokens with `threshold` of the mass -> drop specks."""
    input:
        cls_attn=cls_attn_path("{model}", "{split}"),
    output:
        masks=f"{R}/attention/{{model}}/{{split}}.npy",
    params:
        threshold=config["attention"]["threshold"],
        blur_sigma=config["attention"]["blur_sigma"],
        min_component=config["attention"]["min_component"],
    log:
        logp("attention_masks", "{model}_{split}"),
    benchmark:
        benchp("attention_masks", "{model}_{split}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/attention_masks.py"


rule import_attention_masks:
    """The authors' attn_dino_{train,val}.pt (or .npy) as (N, h, w) uint8."""
    input:
        masks=lambda wc: ATTN_FILES[wc.split],
        manifest=manifest_path("{split}"),
    output:
        masks=f"{R}/attention/files/{{split}}.npy",
    log:
        logp("import_attention_masks", "{split}"),
    benchmark:
        benchp("import_attention_masks", "{split}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/import_attention_masks.py"


rule pca_val:
    """Rows DINO/+Leopart: standardise + PCA fitted on val (optionally its first N images)."""
    input:
        val=lambda wc: raw_tokens(wc.model, "val"),
    output:
        val=f"{R}/pca/{{model}}/{{fit}}/val.npy",
        model=f"{R}/pca/{{model}}/{{fit}}/pca.npz",
    wildcard_constraints:
        fit=r"val|val-first\d+",
    params:
        pca=config["pca"],
    log:
        logp("pca", "{model}_{fit}"),
    benchmark:
        benchp("pca", "{model}_{fit}")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/pca.py"


rule pca_trainval:
    """Rows +CBFE/+CD/upper bound: standardise + PCA fitted on train and val together."""
    input:
        train=lambda wc: raw_tokens(wc.model, "train"),
        val=lambda wc: raw_tokens(wc.model, "val"),
    output:
        train=f"{R}/pca/{{model}}/trainval/train.npy",
        val=f"{R}/pca/{{model}}/trainval/val.npy",
        model=f"{R}/pca/{{model}}/trainval/pca.npz",
    params:
        pca=config["pca"],
    log:
        logp("pca", "{model}_trainval"),
    benchmark:
        benchp("pca", "{model}_trainval")
    threads: THREADS
    conda:
        ENV
    script:
        "../scripts/pca.py"

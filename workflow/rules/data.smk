# Dataset preparation: toy generation or PVOC download/unpack, manifests and ground truth.


if DATASET["kind"] == "toy":

    rule toy_dataset:
        """Generate the deterministic synthetic part-based dataset (leopart/data/toy.py)."""
        output:
            directory(f"{R}/dataset/toy"),
        params:
            toy=DATASET["toy"],
            design_version=TOY_DESIGN_VERSION,
        log:
            logp("toy_dataset", "toy"),
        benchmark:
            benchp("toy_dataset", "toy")
        threads: 1
        conda:
            ENV
        script:
            "../scripts/toy_dataset.py"

    DATASET_DIR = f"{R}/dataset/toy"

else:
    PVOC = DATASET["pvoc"]
    if PVOC.get("folder"):
        DATASET_DIR = PVOC["folder"]
    else:
        DATASET_DIR = "resources/pvoc/unpacked"

        rule pvoc_download:
            """Download the authors' PVOC archive; verify (or record) its SHA-256."""
            output:
                archive="resources/pvoc/voc_data.zip",
                checksum="resources/pvoc/voc_data.zip.json",
            params:
                url=PVOC["url"],
                sha256=PVOC.get("sha256"),
            log:
                logp("pvoc_download", "pvoc"),
            benchmark:
                benchp("pvoc_download", "pvoc")
            threads: 1
            conda:
                ENV
            script:
                "../scripts/pvoc_download.py"

        rule pvoc_unpack:
            """Unpack the archive safely (members with absolute paths or '..' refuse it)."""
            input:
                archive="resources/pvoc/voc_data.zip",
            output:
                directory("resources/pvoc/unpacked"),
            log:
                logp("pvoc_unpack", "pvoc"),
            benchmark:
                benchp("pvoc_unpack", "pvoc")
            threads: 1
            conda:
                ENV
            script:
                "../scripts/pvoc_unpack.py"


rule manifest:
    """List the images and masks of one split (Parquet) after validating the layout."""
    input:
        dataset=DATASET_DIR,
    output:
        manifest=f"{R}/dataset/{{split}}.parquet",
    params:
        kind=DATASET["kind"],
        num_classes=NUM_CLASSES,
        train_masks=DATASET.get("pvoc", {}).get("train_masks", "SegmentationClassAug"),
        require_images=lambda wc: any(not is_imported(m) for m in set(ROW_MODELS.values()))
        or not USE_ATTN_FILES,
    log:
        logp("manifest", "{split}"),
    benchmark:
        benchp("manifest", "{split}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/manifest.py"


rule ground_truth:
    """Masks -> input_size (PIL nearest) -> eval_size (torch legacy nearest), uint8 (N, S, S)."""
    input:
        manifest=manifest_path("{split}"),
    output:
        gt=gt_path("{split}"),
    params:
        num_classes=NUM_CLASSES,
        input_size=DATASET["ground_truth"]["input_size"],
        eval_size=DATASET["ground_truth"]["eval_size"],
    log:
        logp("ground_truth", "{split}"),
    benchmark:
        benchp("ground_truth", "{split}")
    threads: 1
    conda:
        ENV
    script:
        "../scripts/ground_truth.py"

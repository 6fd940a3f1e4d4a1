# Dataset preparation: toy generation or PVOC download/unpack, manifests and ground truth.


if DATASET["kind"] == "toy":

    toy_dataset_job = job_files("toy_dataset", "toy")

    rule toy_dataset:
        """Generate the deterministic synthetic part-based dataset (leopart/data/toy.py)."""
        output:
            dataset=directory(f"{RUN_DIR}/dataset/toy"),
        log:
            toy_dataset_job.log,
        benchmark:
            toy_dataset_job.benchmark
        conda:
            ENV
        threads: 1
        params:
            toy=DATASET["toy"],
            design_version=TOY_DESIGN_VERSION,
        script:
            "../scripts/toy_dataset.py"

    DATASET_DIR = f"{RUN_DIR}/dataset/toy"

elif DATASET["kind"] == "folder":
    DATASET_DIR = DATASET["folder"]["images"]

else:
    PVOC = DATASET["pvoc"]
    if PVOC.get("folder"):
        DATASET_DIR = PVOC["folder"]
    else:
        DATASET_DIR = "resources/pvoc/unpacked"

        pvoc_download_job = job_files("pvoc_download", "pvoc")

        rule pvoc_download:
            """Download the authors' PVOC archive; verify (or record) its SHA-256."""
            output:
                archive="resources/pvoc/voc_data.zip",
                checksum="resources/pvoc/voc_data.zip.json",
            log:
                pvoc_download_job.log,
            benchmark:
                pvoc_download_job.benchmark
            conda:
                ENV
            threads: 1
            params:
                url=PVOC["url"],
                sha256=PVOC.get("sha256"),
            script:
                "../scripts/pvoc_download.py"

        pvoc_unpack_job = job_files("pvoc_unpack", "pvoc")

        rule pvoc_unpack:
            """Unpack the archive safely (members with absolute paths or '..' refuse it)."""
            input:
                archive="resources/pvoc/voc_data.zip",
            output:
                folder=directory("resources/pvoc/unpacked"),
            log:
                pvoc_unpack_job.log,
            benchmark:
                pvoc_unpack_job.benchmark
            conda:
                ENV
            threads: 1
            script:
                "../scripts/pvoc_unpack.py"


manifest_job = job_files("manifest", "{split}")


checkpoint manifest:
    """List the images and masks of one split (Parquet) after validating the layout (a checkpoint:
    sharded feature extraction reads the number of images from it)."""
    input:
        dataset=DATASET_DIR,
        masks=(DATASET.get("folder") or {}).get("masks") or [],
    output:
        manifest=f"{RUN_DIR}/dataset/{{split}}.parquet",
    log:
        manifest_job.log,
    benchmark:
        manifest_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        kind=DATASET["kind"],
        num_classes=NUM_CLASSES,
        class_names=DATASET["class_names"],
        train_masks=PVOC_CONFIG.get("train_masks"),
        voc2012=PVOC_CONFIG.get("voc2012"),
        folder=DATASET.get("folder"),
        background_class=DATASET["background_class"],
        require_images=lambda wc: any(not is_imported(m) for m in set(ROW_MODELS.values())) or not USE_ATTENTION_FILES,
    script:
        "../scripts/manifest.py"


ground_truth_job = job_files("ground_truth", "{split}")


rule ground_truth:
    """Masks -> input_size (PIL nearest) -> eval_size (torch legacy nearest), uint8 (N, S, S)."""
    input:
        manifest=manifest_path("{split}"),
    output:
        gt=gt_path("{split}"),
    log:
        ground_truth_job.log,
    benchmark:
        ground_truth_job.benchmark
    conda:
        ENV
    threads: 1
    params:
        num_classes=NUM_CLASSES,
        input_size=DATASET["ground_truth"]["input_size"],
        eval_size=DATASET["ground_truth"]["eval_size"],
        background_class=DATASET["background_class"],
        ignore_index=DATASET["ignore_index"],
    script:
        "../scripts/ground_truth.py"

# Training: DINO pretraining (a backbone for new domains such as the toy data) and Leopart
# fine-tuning. Only run when training.<kind>.retrain is true; otherwise the committed checkpoints
# named in models.<name>.weights.path are used (models/toy/, provenance JSONs beside them).


train_dino_job = job_files("train_dino", "dino")


rule train_dino:
    """DINO self-supervised pretraining; writes checkpoints, logs, a loss curve and backbones."""
    input:
        manifest=train_manifest("dino"),
    output:
        final=f"{RUN_DIR}/train/dino/final.pt",
        backbone=f"{RUN_DIR}/train/dino/backbone_teacher.pt",
    log:
        train_dino_job.log,
    benchmark:
        train_dino_job.benchmark
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=training_gpus("dino"),
    params:
        section=training_section("dino"),
        design_version=toy_design_of("dino"),
    script:
        "../scripts/train_dino.py"


train_leopart_job = job_files("train_leopart", "leopart")


rule train_leopart:
    """Leopart fine-tuning (dense clustering loss) starting from the DINO backbone."""
    input:
        manifest=train_manifest("leopart"),
        init=lambda wc: weights_file((TRAINING.get("leopart") or {}).get("init_model", "dino")),
    output:
        final=f"{RUN_DIR}/train/leopart/final.pt",
        backbone=f"{RUN_DIR}/train/leopart/backbone_student.pt",
    log:
        train_leopart_job.log,
    benchmark:
        train_leopart_job.benchmark
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=training_gpus("leopart"),
    params:
        section=training_section("leopart"),
        design_version=toy_design_of("leopart"),
    script:
        "../scripts/train_leopart.py"

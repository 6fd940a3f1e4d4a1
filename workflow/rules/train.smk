# Training: DINO pretraining (a backbone for new domains such as the toy data) and Leopart
# fine-tuning. Only run when training.<kind>.retrain is true; otherwise the shipped, validated
# checkpoints named in models.<name>.weights.path are used.


rule train_dino:
    """DINO self-supervised pretraining; writes checkpoints, logs, a loss curve and backbones."""
    input:
        manifest=train_manifest("dino"),
    output:
        final=f"{R}/train/dino/final.pt",
        backbone=f"{R}/train/dino/backbone_teacher.pt",
    params:
        section={k: v for k, v in (TRAINING.get("dino") or {}).items() if k != "retrain"},
        design_version=toy_design_of("dino"),
    log:
        logp("train_dino", "dino"),
    benchmark:
        benchp("train_dino", "dino")
    threads: THREADS
    resources:
        gpu=lambda wc: 1 if (TRAINING.get("dino") or {}).get("config", {}).get("device") == "cuda" else 0,
    conda:
        ENV
    script:
        "../scripts/train_dino.py"


rule train_leopart:
    """Leopart fine-tuning (dense clustering loss) starting from the DINO backbone."""
    input:
        manifest=train_manifest("leopart"),
        init=lambda wc: weights_file((TRAINING.get("leopart") or {}).get("init_model", "dino")),
    output:
        final=f"{R}/train/leopart/final.pt",
        backbone=f"{R}/train/leopart/backbone_student.pt",
    params:
        section={k: v for k, v in (TRAINING.get("leopart") or {}).items() if k != "retrain"},
        design_version=toy_design_of("leopart"),
    log:
        logp("train_leopart", "leopart"),
    benchmark:
        benchp("train_leopart", "leopart")
    threads: THREADS
    resources:
        gpu=lambda wc: 1 if (TRAINING.get("leopart") or {}).get("config", {}).get("device") == "cuda" else 0,
    conda:
        ENV
    script:
        "../scripts/train_leopart.py"

"""Training stages: DINO pretraining and Leopart fine-tuning, as Snakemake rules or from the shell.

Both read a ``training.<kind>`` config section::

    images: {source: toy, n: 12800, seed: 1000, image_size: 128}   # or {source: manifest}
    config: {...}      # overrides of leopart.train.<dino|leopart_trainer>.DEFAULT_CONFIG

``images.source: toy`` renders toy images on the fly with their own seed (distinct from the
evaluation splits); ``manifest`` trains on the images of the dataset's train split (a user's
own domain). The same function runs under Snakemake (rules ``train_dino`` / ``train_leopart``)
and from the shell::

    python -m leopart.stages.train dino config/config.yaml resources/train/toy_dino
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from leopart.errors import LeopartError
from leopart.stages.runner import StageCall, setup_logging

log = logging.getLogger(__name__)


def training_dataset(images: dict[str, Any], manifest: str | None = None) -> Any:
    """PIL-image dataset for training: toy images rendered on the fly, or a split's images."""
    from leopart.train.multicrop import ImagePathDataset, ToyImageDataset

    if images["source"] == "toy":
        return ToyImageDataset(images["n"], images["image_size"], seed=images["seed"], split="train",
                               cache=images["cache"], fresh=images["fresh"])
    if not manifest:
        raise LeopartError("training.*.images.source = 'manifest' needs the train manifest")
    from leopart.data.dataset import read_manifest

    index = read_manifest(manifest)
    if index.image_paths is None:
        raise LeopartError(f"{manifest}: the train split has no images to train on")
    return ImagePathDataset(index.image_paths)


def run_training(kind: str, section: dict[str, Any], out_dir: str | Path, manifest: str | None = None,
                 init_path: str | None = None) -> dict[str, Any]:
    """Train ``kind`` ∈ {dino, leopart} with ``section`` (a ``training.<kind>`` config entry)."""
    import torch

    from leopart.config import complete_section, merge_config

    if kind == "dino":
        from leopart.train.dino import DEFAULT_CONFIG, TOY_CONFIG, train_dino as train
    elif kind == "leopart":
        from leopart.train.leopart_trainer import DEFAULT_CONFIG, train_leopart as train

        TOY_CONFIG = {}
    else:
        raise LeopartError(f"unknown training kind {kind!r} (dino or leopart)")
    section = complete_section(f"training_{kind}", section, f"training.{kind}")
    base = merge_config(DEFAULT_CONFIG, TOY_CONFIG) if section["toy_defaults"] else DEFAULT_CONFIG
    config = merge_config(base, section.get("config") or {}, where=f"training.{kind}.config")
    if init_path is not None:
        config = merge_config(config, {"init": {"source": "dino", "path": str(init_path)}})
    if section["threads"]:
        torch.set_num_threads(section["threads"])
    dataset = training_dataset(section["images"], manifest)
    log.info("training %s on %d images into %s", kind, len(dataset), out_dir)
    return train(config, dataset, out_dir, resume="auto")


def train_dino_stage(call: StageCall) -> None:
    """Pipeline stage: DINO pretraining (rule ``train_dino``)."""
    out_dir = Path(call.output["final"]).parent
    run_training("dino", dict(call.params["section"]), out_dir, manifest=call.input["manifest"] or None)


def train_leopart_stage(call: StageCall) -> None:
    """Pipeline stage: Leopart fine-tuning from a DINO checkpoint (rule ``train_leopart``)."""
    out_dir = Path(call.output["final"]).parent
    run_training("leopart", dict(call.params["section"]), out_dir, manifest=call.input["manifest"] or None,
                 init_path=call.input["init"])


def init_distributed() -> None:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1).

    NCCL with one GPU per process (``LOCAL_RANK``) when CUDA is available, gloo on CPU. The trainers
    wrap the student in DistributedDataParallel and all-reduce the Sinkhorn sums themselves.
    """
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")


def main() -> None:
    """Shell entry point: ``python -m leopart.stages.train {dino,leopart} CONFIG OUT [--init CKPT]
    [--overlay FILE ...]``.

    Multi-GPU: ``torchrun --nproc_per_node=N -m leopart.stages.train leopart CONFIG OUT --init CKPT``.
    """
    from leopart.config import load_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", choices=["dino", "leopart"])
    parser.add_argument("config", help="pipeline config file holding training.<kind>")
    parser.add_argument("out", help="output folder (resumes from OUT/checkpoints/last.pt)")
    parser.add_argument("--init", default=None, help="initial backbone checkpoint (leopart)")
    parser.add_argument("--manifest", default=None, help="train manifest for images.source=manifest")
    parser.add_argument("--overlay", action="append", default=[],
                        help="YAML merged on top of CONFIG (repeatable, as snakemake --configfile CONFIG FILE)")
    args = parser.parse_args()
    setup_logging(None)
    init_distributed()
    try:
        config = load_config(args.config, *args.overlay)
        section = (config.get("training") or {}).get(args.kind)
        if not section:
            raise LeopartError(f"{args.config}: no training.{args.kind} section")
        summary = run_training(args.kind, section, args.out, args.manifest, args.init)
    except LeopartError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(yaml.safe_dump({"summary": summary}, sort_keys=False))


if __name__ == "__main__":
    main()

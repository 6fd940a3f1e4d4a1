"""The training stage as the rules call it: config section -> trainer -> backbone usable by the
evaluation half (models.<name>.weights.source: local)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leopart.errors import LeopartError
from leopart.models.build import build_model
from leopart.stages.train import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_MODEL = {"arch": "custom", "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32}



def test_dino_stage_writes_a_backbone_the_pipeline_loads(tmp_path: Path) -> None:
    section = {
        "images": {"source": "toy", "n": 8, "seed": 5, "image_size": 48},
        "config": {"model": TINY_MODEL, "epochs": 1, "batch_size": 4, "progress": False, "device": "cpu",
                   "head": {"out_dim": 64, "hidden_dim": 64, "bottleneck_dim": 16},
                   "crops": {"global_size": 32, "local_size": 16, "n_local": 2}},
    }
    run_training("dino", section, tmp_path / "dino")
    out = tmp_path / "dino"
    for name in ("final.pt", "backbone_teacher.pt", "train_log.csv", "loss_curve.png", "train_summary.json"):
        assert (out / name).is_file(), name
    spec = {"arch": "custom", "custom": {k: TINY_MODEL[k] for k in ("patch_size", "embed_dim", "depth", "num_heads")},
            "weights": {"source": "local", "seed": 0}}
    model = build_model(spec, str(out / "backbone_teacher.pt"))
    state = torch.load(out / "backbone_teacher.pt", weights_only=True)
    assert torch.equal(model.state_dict()["cls_token"], state["cls_token"])


def test_unknown_trainer_key_is_named(tmp_path: Path) -> None:
    section = {"images": {"source": "toy", "n": 4, "seed": 0, "image_size": 32},
               "config": {"epochs": 1, "optim": {"learning_rate": 0.1}}}
    with pytest.raises(LeopartError, match="learning_rate"):
        run_training("dino", section, tmp_path / "x")
    # the section is checked against the trainer's schema before the trainer's strict merge
    message = r"^config: unknown key training\.dino\.config\.optim\.learning_rate \(typo\?\)$"
    with pytest.raises(LeopartError, match=message):
        run_training("dino", section, tmp_path / "x")


def test_manifest_source_needs_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(LeopartError, match="needs the train manifest"):
        run_training("dino", {"images": {"source": "manifest"}, "config": {}}, tmp_path / "x")

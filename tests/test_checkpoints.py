"""Tests for leopart.models.checkpoints with checkpoint files built from tiny ViTs."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from leopart.errors import LeopartError
from leopart.models.checkpoints import extract_backbone_state, load_backbone_weights, load_checkpoint_file
from leopart.models.vit import build_vit, interpolate_pos_embed_dino, tokens_and_attention

TINY = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32)
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def tiny(seed: int, **kw) -> nn.Module:
    return build_vit("custom", seed=seed, **{**TINY, **kw}).eval()


def outputs(model: nn.Module, x: torch.Tensor = X) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return tokens_and_attention(model, x)


def assert_same_outputs(a: nn.Module, b: nn.Module) -> None:
    ta, aa = outputs(a)
    tb, ab = outputs(b)
    assert torch.equal(ta, tb) and torch.equal(aa, ab)


@pytest.fixture(scope="module")
def source() -> nn.Module:
    return tiny(1)


def head_params() -> dict[str, torch.Tensor]:
    return {"head.mlp.0.weight": torch.randn(64, 32), "head.last_layer.weight_g": torch.ones(1, 16)}


def test_dino_full_checkpoint(tmp_path: Path, source: nn.Module) -> None:
    sd = source.state_dict()
    other = tiny(5).state_dict()
    ckpt = {
        "teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, **head_params()},
        "student": {f"module.backbone.{k}": v for k, v in other.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536),
        "dino_loss": {"center": torch.zeros(1, 16)},
    }
    path = tmp_path / "dino_full.pth"
    torch.save(ckpt, path)
    target = tiny(2)
    report = load_backbone_weights(target, path, "dino")  # Namespace is allowed without trust
    assert report["loaded"] == len(sd)
    assert set(head_params()) <= set(report["ignored"]) and report["pos_embed_resampled"] is None
    assert_same_outputs(target, source)


def test_dino_backbone_only_and_timm_style_dicts(tmp_path: Path, source: nn.Module) -> None:
    sd = dict(source.state_dict())
    torch.save(sd, tmp_path / "backbone.pth")
    target = tiny(2)
    load_backbone_weights(target, tmp_path / "backbone.pth", "dino")
    assert_same_outputs(target, source)
    # a timm-style dict that still has a classifier head: head dropped
    state = extract_backbone_state({**sd, "head.weight": torch.zeros(10, 32)}, "dino")
    assert set(state) == set(sd)


def test_leopart_lightning_checkpoint_uses_student(tmp_path: Path, source: nn.Module) -> None:
    student = source.state_dict()
    teacher = tiny(3).state_dict()
    state_dict = {
        **{f"model.{k}": v for k, v in student.items()},
        "model.head.0.weight": torch.randn(64, 32),
        "model.prototypes.weight": torch.randn(10, 16),
        **{f"teacher.{k}": v for k, v in teacher.items()},
        "teacher.head.0.weight": torch.randn(64, 32),
    }
    path = tmp_path / "leopart.ckpt"
    torch.save({"state_dict": state_dict, "epoch": 3, "global_step": 10,
                "pytorch-lightning_version": "1.4.9"}, path)
    target = tiny(2)
    report = load_backbone_weights(target, path, "leopart")
    assert report["loaded"] == len(student)
    assert "model.prototypes.weight" in report["ignored"] and "teacher.cls_token" in report["ignored"]
    assert_same_outputs(target, source)


def test_leopart_fallback_without_model_prefix(source: nn.Module) -> None:
    sd = source.state_dict()
    ckpt = {f"backbone.{k}": v for k, v in sd.items()} | {"prototypes.weight": torch.zeros(3)}
    state = extract_backbone_state(ckpt, "leopart")
    assert set(state) == set(sd)


def test_local_sources(tmp_path: Path, source: nn.Module) -> None:
    sd = source.state_dict()
    for i, ckpt in enumerate([
        dict(sd),
        {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1},
        {"state_dict": {f"encoder.{k}": v for k, v in sd.items()}},
        {"teacher": {f"backbone.{k}": v for k, v in sd.items()} | head_params()},
    ]):
        path = tmp_path / f"local{i}.pth"
        torch.save(ckpt, path)
        target = tiny(2)
        load_backbone_weights(target, path, "local")
        assert_same_outputs(target, source)
    with pytest.raises(LeopartError, match="no ViT state dict found"):
        extract_backbone_state({"weights": {"a": torch.zeros(1)}}, "local")


def test_missing_key_is_an_error_naming_file_and_key(tmp_path: Path, source: nn.Module) -> None:
    sd = {k: v for k, v in source.state_dict().items() if k != "norm.weight"}
    path = tmp_path / "incomplete.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}}, path)
    with pytest.raises(LeopartError) as info:
        load_backbone_weights(tiny(2), path, "dino")
    assert str(path) in str(info.value) and "norm.weight" in str(info.value)


def test_prefix_mismatch_is_not_silently_random(tmp_path: Path, source: nn.Module) -> None:
    # blocks under another name: the original strict=False load would keep a random ViT
    sd = {k.replace("blocks.", "layers."): v for k, v in source.state_dict().items()}
    path = tmp_path / "renamed.pth"
    torch.save(sd, path)
    with pytest.raises(LeopartError, match=r"unset \(missing: blocks\.0\."):
        load_backbone_weights(tiny(2), path, "local")


def test_deeper_checkpoint_has_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "deeper.pth"
    torch.save(tiny(1, depth=3).state_dict(), path)
    with pytest.raises(LeopartError, match=r"unexpected: blocks\.2\."):
        load_backbone_weights(tiny(2), path, "local")


def test_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "wide.pth"
    torch.save(tiny(1, embed_dim=64).state_dict(), path)
    with pytest.raises(LeopartError, match="shape mismatch"):
        load_backbone_weights(tiny(2), path, "local")


def test_pos_embed_of_other_grid_is_resampled_with_dino_rule(tmp_path: Path, source: nn.Module) -> None:
    path = tmp_path / "src.pth"
    torch.save(source.state_dict(), path)
    target = tiny(2, img_size=48)  # 6x6 native grid, checkpoint has 4x4
    report = load_backbone_weights(target, path, "local")
    assert report["pos_embed_resampled"] == [16, 36]
    expected = interpolate_pos_embed_dino(source.pos_embed.detach(), 6, 6)
    assert torch.equal(target.pos_embed.detach(), expected)
    # at 48x48 both models run the same DINO interpolation -> same outputs
    x = torch.randn(1, 3, 48, 48)
    assert torch.allclose(outputs(target, x)[0], outputs(source, x)[0], atol=1e-5)


class Custom:
    """A class only loadable with full unpickling."""

    def __init__(self) -> None:
        self.value = 3


def test_custom_class_refused_unless_trusted(tmp_path: Path, source: nn.Module) -> None:
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": source.state_dict(), "extra": Custom()}, path)
    with pytest.raises(LeopartError) as info:
        load_checkpoint_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: checkpoint needs full unpickling, which would execute code")
    assert "models.<name>.weights.trust: true" in msg and "weights_only" not in msg
    assert "Custom" in msg and "\n" not in msg
    ckpt = load_checkpoint_file(path, trust=True)
    assert isinstance(ckpt["extra"], Custom)
    target = tiny(2)
    load_backbone_weights(target, path, "local", trust=True)
    assert_same_outputs(target, source)


def test_trusted_load_tolerates_classes_from_missing_modules(tmp_path: Path, source: nn.Module) -> None:
    """Lightning checkpoints key callback states by class; unpickling must not need the package."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "fake_lightning_mod.py").write_text(textwrap.dedent("""
        class ModelCheckpoint:
            pass
        class AttributeDict(dict):
            pass
    """))
    sys.path.insert(0, str(mod_dir))
    try:
        import fake_lightning_mod as fl

        hp = fl.AttributeDict(lr=0.1)
        torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
                    "callbacks": {fl.ModelCheckpoint: {"best_model_score": torch.tensor(1.0)}},
                    "hyper_parameters": hp}, tmp_path / "pl.ckpt")
    finally:
        sys.path.remove(str(mod_dir))
        sys.modules.pop("fake_lightning_mod", None)
    with pytest.raises(LeopartError, match="needs full unpickling"):
        load_checkpoint_file(tmp_path / "pl.ckpt")
    ckpt = load_checkpoint_file(tmp_path / "pl.ckpt", trust=True)
    assert dict(ckpt["hyper_parameters"]) == {"lr": 0.1}
    target = tiny(2)
    load_backbone_weights(target, tmp_path / "pl.ckpt", "leopart", trust=True)
    assert_same_outputs(target, source)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x80\x04garbage" * 20])
def test_corrupt_files_give_one_line_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    for trust in (False, True):
        with pytest.raises(LeopartError) as info:
            load_checkpoint_file(path, trust=trust)
        assert str(info.value).startswith(f"{path}: not a readable PyTorch checkpoint")
        assert "\n" not in str(info.value)


def test_truncated_missing_and_non_dict_files(tmp_path: Path, source: nn.Module) -> None:
    good = tmp_path / "good.pth"
    torch.save(source.state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(LeopartError, match="trunc.pth: not a readable PyTorch checkpoint"):
        load_checkpoint_file(tmp_path / "trunc.pth")
    with pytest.raises(LeopartError, match="nope.pth: checkpoint file is missing"):
        load_checkpoint_file(tmp_path / "nope.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(LeopartError, match="tensor.pth: checkpoint holds a Tensor"):
        load_checkpoint_file(tmp_path / "tensor.pth")


def test_random_and_unknown_sources(tmp_path: Path) -> None:
    model = tiny(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_backbone_weights(model, None, "random")["loaded"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(LeopartError, match="expected one of"):
        load_backbone_weights(model, tmp_path / "x.pth", "imagenet")
    with pytest.raises(LeopartError, match="no key ending in 'cls_token'"):
        extract_backbone_state({"teacher": {"backbone.x": torch.zeros(1)}}, "dino")


_MARKER_RUNS: list[str] = []


def _marker(path: str) -> int:
    """Stand-in for a payload: records that it ran and creates ``path``."""
    _MARKER_RUNS.append(path)
    Path(path).touch()
    return 0


class _SystemPayload:
    """Pickles as a call of ``os.system`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _MarkerPayload:
    """Pickles as a call of the harmless module-level :func:`_marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_marker, (str(self.marker),))


@pytest.mark.parametrize("payload", [_SystemPayload, _MarkerPayload])
@pytest.mark.parametrize("legacy", [False, True])
def test_code_executing_pickle_is_refused_with_one_honest_message(
    tmp_path: Path, source: nn.Module, payload: type, legacy: bool
) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": source.state_dict(), "x": payload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    _MARKER_RUNS.clear()
    for loader in (lambda: load_checkpoint_file(path), lambda: load_backbone_weights(tiny(2), path, "local")):
        with pytest.raises(LeopartError) as info:
            loader()
        msg = str(info.value)
        assert msg.startswith(f"{path}: checkpoint needs full unpickling, which would execute code")
        assert "models.<name>.weights.trust: true" in msg
        assert "not a readable" not in msg and "weights_only" not in msg and "\n" not in msg
        assert ("system" if payload is _SystemPayload else "_marker") in msg
    assert not marker.exists() and _MARKER_RUNS == []


def test_raw_pickle_with_payload_is_refused_not_called_corrupt(tmp_path: Path) -> None:
    """A plain ``pickle.dump`` file (protocol 4, not torch's format) with a payload."""
    import pickle

    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _SystemPayload(marker)}, protocol=4))
    with pytest.raises(LeopartError) as info:
        load_checkpoint_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: checkpoint needs full unpickling, which would execute code")
    assert "system" in msg and "weights_only" not in msg
    assert not marker.exists()


def test_allow_list_is_documented_where_trust_is() -> None:
    """Every class loadable without ``trust`` is named in the schema's description of ``trust``;
    the PVOC config does not claim that the (allow-listed) DINO checkpoint needs trust."""
    import yaml

    from leopart.models.checkpoints import _SAFE_GLOBALS

    root = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((root / "leopart" / "schemas" / "config.schema.yaml").read_text())

    def find_trust(node):
        if isinstance(node, dict):
            if isinstance(node.get("trust"), dict):
                return node["trust"]
            for v in node.values():
                if (found := find_trust(v)) is not None:
                    return found
        return None

    description = find_trust(schema).get("description", "")
    for cls in _SAFE_GLOBALS:
        assert f"{cls.__module__}.{cls.__qualname__}" in description
    assert "weights_only" not in description
    pvoc = (root / "config" / "pvoc.yaml").read_text()
    dino_trust = [line for line in pvoc.splitlines() if line.strip().startswith("trust:")][0]
    assert "trust: false" in dino_trust and "set true" not in dino_trust
    assert "argparse.Namespace" in dino_trust

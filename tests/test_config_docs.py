"""The config documentation cannot go stale: every schema key is described, config/README.md is
what the generator writes, the trainer sub-schemas match the trainers' defaults key for key and
catch a typo in a trainer key."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import pytest
import yaml

from leopart.config import load_schema, validate_config
from leopart.config_docs import GENERATOR, iter_keys, main, render, resolve, trainer_defaults
from leopart.errors import LeopartError

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("dino", "leopart")


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema()


@pytest.fixture(scope="module")
def toy_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_committed_config_readme_is_what_the_generator_writes() -> None:
    committed = (ROOT / "config" / "README.md").read_text()
    assert committed == render(), f"config/README.md is stale: run `{GENERATOR}`"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    out = tmp_path / "README.md"
    assert main(["--out", str(out)]) == 0
    assert main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text() + "edited by hand\n")
    assert main(["--check", "--out", str(out)]) == 1


def test_every_schema_property_has_a_description(schema: dict) -> None:
    keys = list(iter_keys(schema))
    paths = {k.path for k in keys}
    # the walk reaches every level: $ref'd definitions, the free-form models mapping, trainer keys
    for expected in ("run", "models.<name>.weights.source", "cd.search.markov_times",
                     "training.dino.images.seed", "training.dino.config.optim.lr",
                     "training.leopart.config.loss.queue_length", "training.leopart.config.crops.jitter"):
        assert expected in paths
    missing = [k.path for k in keys if not str(k.schema.get("description", "")).strip()]
    assert missing == []


def test_every_object_in_the_schema_rejects_unknown_keys(schema: dict) -> None:
    open_objects = [k.path for k in iter_keys(schema)
                    if "object" in _types(k.schema) and k.schema.get("additionalProperties", True) is True]
    assert open_objects == []


def _types(node: Mapping) -> list[str]:
    t = node.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _key_paths(node: Mapping, prefix: str = "") -> set[str]:
    out = set()
    for k, v in node.items():
        out.add(prefix + k)
        if isinstance(v, Mapping) and v:
            out |= _key_paths(v, f"{prefix}{k}.")
    return out


def _trainer_schema(schema: dict, kind: str) -> dict:
    return resolve(schema["$defs"][f"training_{kind}"], schema)["properties"]["config"]


@pytest.mark.parametrize("kind", KINDS)
def test_trainer_subschema_has_exactly_the_trainer_keys(schema: dict, kind: str) -> None:
    prefix = f"training.{kind}.config."
    documented = {k.path[len(prefix):] for k in iter_keys(schema) if k.path.startswith(prefix)}
    defaults, _ = trainer_defaults()[kind]
    assert documented == _key_paths(defaults)


@pytest.mark.parametrize("kind", KINDS)
def test_trainer_defaults_validate_and_the_schema_does_not_repeat_them(schema: dict, kind: str) -> None:
    defaults, toy = trainer_defaults()[kind]
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{kind}_config"})
    for config in (defaults, toy):
        if config is not None:
            assert [e.message for e in validator.iter_errors(config)] == []
    prefix = f"training.{kind}.config"
    restated = [k.path for k in iter_keys(schema) if k.path.startswith(prefix) and "default" in k.schema]
    assert restated == []   # the trainers' DEFAULT_CONFIG is the one source; config/README.md shows it
    assert _trainer_schema(schema, kind).get("additionalProperties") is False


@pytest.mark.parametrize(
    ("kind", "path", "key"),
    [
        ("dino", ("optim",), "lrr"),
        ("dino", (), "epoch"),
        ("leopart", ("loss",), "queue_lenght"),
        ("leopart", ("crops",), "n_globals"),
    ],
)
def test_trainer_typo_is_caught_by_validation(toy_config: dict, kind: str, path: tuple, key: str) -> None:
    cfg = copy.deepcopy(toy_config)
    node = cfg["training"][kind]["config"]
    for part in path:
        node = node.setdefault(part, {})
    node[key] = 1
    with pytest.raises(LeopartError) as info:
        validate_config(cfg)
    dotted = ".".join(("training", kind, "config", *path, key))
    assert str(info.value) == f"config: unknown key {dotted} (typo?)"


def test_trainer_value_out_of_range_is_named(toy_config: dict) -> None:
    cfg = copy.deepcopy(toy_config)
    cfg["training"]["leopart"]["config"]["loss"]["loss_mask"] = "foreground"
    with pytest.raises(LeopartError, match="training.leopart.config.loss.loss_mask"):
        validate_config(cfg)


def test_shipped_config_comments_mention_no_path_outside_the_repository() -> None:
    for name in ("config.yaml", "pvoc.yaml"):
        text = (ROOT / "config" / name).read_text()
        assert "/work/" not in text and "shared/" not in text, name

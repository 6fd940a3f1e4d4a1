"""Config validation: both shipped configs pass; typos and impossible values fail with one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from leopart.config import load_config, merge_config, validate_config
from leopart.errors import LeopartError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "pvoc.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    load_config(ROOT / "config" / name)


def _error(config: dict) -> str:
    with pytest.raises(LeopartError) as info:
        validate_config(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_typo_in_nested_key_is_named(toy_config: dict) -> None:
    cfg = copy.deepcopy(toy_config)
    cfg["cd"]["markov_tme"] = 2.0
    assert _error(cfg) == "config: unknown key cd.markov_tme (typo?)"


def test_typo_at_top_level_is_named(toy_config: dict) -> None:
    cfg = copy.deepcopy(toy_config)
    cfg["kmean"] = {}
    assert "unknown key kmean" in _error(cfg)


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("cd", "seeds"), [0, 1], "cd.seeds.0"),
        (("cd", "markov_time"), -1.0, "cd.markov_time"),
        (("cbfe", "k"), 1, "cbfe.k"),
        (("attention", "threshold"), 1.5, "attention.threshold"),
        (("dataset", "kind"), "coco", "dataset.kind"),
        (("features", "device"), "tpu", "features.device"),
        (("cbfe", "cut_range"), [0.8, 0.5], "cbfe.cut_range"),
        (("rows", "leopart"), "missing", "rows.leopart"),
    ],
)
def test_impossible_values_are_named(toy_config: dict, path: tuple, value, needle: str) -> None:
    cfg = copy.deepcopy(toy_config)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert needle in _error(cfg)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LeopartError, match="config file is missing"):
        load_config(tmp_path / "nope.yaml")


def test_broken_yaml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(LeopartError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_merge_config_is_recursive_for_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": {"d": 2, "e": [1, 2]}}, "f": [3], "g": 4}
    overlay = {"a": {"c": {"e": [9]}, "x": 5}, "f": {"h": 1}, "g": None}
    merged = merge_config(base, overlay)
    assert merged == {"a": {"b": 1, "c": {"d": 2, "e": [9]}, "x": 5}, "f": {"h": 1}, "g": None}
    assert base == {"a": {"b": 1, "c": {"d": 2, "e": [1, 2]}}, "f": [3], "g": 4}   # untouched


def test_load_config_merges_overlays_in_order_and_names_a_bad_one(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text("training: {dino: {config: {epochs: 15}}}\n")
    two = tmp_path / "two.yaml"
    two.write_text("training: {dino: {config: {epochs: 7}}}\n")
    cfg = load_config(ROOT / "config" / "config.yaml", one, two)
    base = load_config(ROOT / "config" / "config.yaml")
    assert cfg["training"]["dino"]["config"]["epochs"] == 7
    cfg["training"]["dino"]["config"]["epochs"] = base["training"]["dino"]["config"]["epochs"]
    assert cfg == base
    with pytest.raises(LeopartError, match="nope.yaml: config file is missing"):
        load_config(ROOT / "config" / "config.yaml", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("threads: 0\n")
    with pytest.raises(LeopartError, match="threads"):
        load_config(ROOT / "config" / "config.yaml", bad)

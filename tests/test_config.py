"""Config validation: every config in the repository passes; typos and impossible values fail with one line."""

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


def _repo_configs() -> list[tuple[str, list[Path]]]:
    """Every config of the repository as (id, files merged in order): the shipped configs, the
    test configs, and the experiment configs (overlays on config/config.yaml as their headers say;
    older full copies alone)."""
    base = ROOT / "config" / "config.yaml"
    cases = []
    for p in sorted((ROOT / "config").glob("*.yaml")):
        if "dataset" in (yaml.safe_load(p.read_text()) or {}):
            cases.append((p.relative_to(ROOT).as_posix(), [p]))
        else:  # an overlay such as config/robust.yaml: on top of each shipped config
            cases += [(f"{full}+{p.name}", [ROOT / "config" / full, p]) for full in ("config.yaml", "pvoc.yaml")]
    cases += [(p.relative_to(ROOT).as_posix(), [p]) for p in sorted((ROOT / "tests" / "data").glob("*.yaml"))]
    overlays = sorted((ROOT / "config" / "overlays").glob("*.yaml"))
    cases += [(p.relative_to(ROOT).as_posix(), [base, p]) for p in overlays]
    for p in sorted((ROOT / "docs" / "experiments" / "configs").glob("*.yaml")):
        full = "dataset" in (yaml.safe_load(p.read_text()) or {})
        cases.append((p.relative_to(ROOT).as_posix(), [p] if full else [base, p]))
    return cases


REPO_CONFIGS = _repo_configs()


@pytest.mark.parametrize(("name", "files"), REPO_CONFIGS, ids=[c[0] for c in REPO_CONFIGS])
def test_every_config_in_the_repository_validates(name: str, files: list[Path]) -> None:
    load_config(*files)


def test_default_rows_use_the_committed_toy_backbones_and_the_overlay_puts_random_init_back() -> None:
    """The default rows and CBFE attention use models/toy/ (files present, SHA-256 as recorded in
    their provenance JSONs); config/overlays/random-init.yaml switches all of them to models.random."""
    import json

    from leopart.io import sha256_file

    cfg = load_config(ROOT / "config" / "config.yaml")
    assert (cfg["rows"]["dino"], cfg["rows"]["leopart"], cfg["attention"]["model"]) == ("dino", "leopart", "dino")
    for name in ("dino", "leopart"):
        w = cfg["models"][name]["weights"]
        path = ROOT / w["path"]
        assert path.parent == ROOT / "models" / "toy"
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["sha256"] == w["sha256"] == sha256_file(path)
        assert record["ship_gate"] == {"checks": ["attention_beats_gaussian_prior"], "passed": True}
        assert record["validation"]["passes"]["attention_beats_gaussian_prior"] is True
    assert json.loads((ROOT / "models/toy/leopart_vit_toy.json").read_text())["trainer_config"]["ema_update"] == (
        "before_forward")
    assert cfg["training"]["leopart"]["config"]["ema_update"] == "before_forward"
    rnd = load_config(ROOT / "config" / "config.yaml", ROOT / "config" / "overlays" / "random-init.yaml")
    assert (rnd["rows"]["dino"], rnd["rows"]["leopart"], rnd["attention"]["model"]) == ("random",) * 3
    assert rnd["run"] != cfg["run"]


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
    merged = merge_config(base, overlay, strict=False)
    assert merged == {"a": {"b": 1, "c": {"d": 2, "e": [9]}, "x": 5}, "f": {"h": 1}, "g": None}
    assert base == {"a": {"b": 1, "c": {"d": 2, "e": [1, 2]}}, "f": [3], "g": 4}   # untouched


def test_strict_merge_names_unknown_keys_with_their_full_path() -> None:
    defaults = {"optim": {"lr": 1.0, "betas": [0.9, 0.999]}, "init": {"path": None}, "extra": None}
    with pytest.raises(LeopartError, match=r"^training\.dino\.config\.optim\.lrr: unknown config key "
                                           r"\(known: betas, lr\)$"):
        merge_config(defaults, {"optim": {"lrr": 2.0}}, where="training.dino.config")
    with pytest.raises(LeopartError, match=r"^seed: unknown config key"):
        merge_config(defaults, {"seed": 1})
    with pytest.raises(LeopartError, match=r"^optim: expected a mapping, got list$"):
        merge_config(defaults, {"optim": [1]})
    user = {"optim": {"betas": [0.5, 0.6]}, "extra": {"any": {"thing": 1}}}
    merged = merge_config(defaults, user)
    assert merged == {"optim": {"lr": 1.0, "betas": [0.5, 0.6]}, "init": {"path": None},
                      "extra": {"any": {"thing": 1}}}   # a None default takes any value as it is
    merged["optim"]["betas"].append(1)
    merged["extra"]["any"]["thing"] = 2
    assert user == {"optim": {"betas": [0.5, 0.6]}, "extra": {"any": {"thing": 1}}}   # copies, not aliases
    assert defaults["optim"] == {"lr": 1.0, "betas": [0.9, 0.999]}
    assert merge_config(defaults, None) == defaults


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


@pytest.mark.parametrize(("num_classes", "expected"), [
    # C: overcluster C, fg C-1, preferred C-1, cbfe round(200 C / 21), cd round(149 (C-1) / 20)
    (21, {"overcluster.k": 21, "fg_clustering.k": 20, "cd.preferred_modules": 20, "cbfe.k": 200, "cd.k": 149}),
    (7, {"overcluster.k": 7, "fg_clustering.k": 6, "cd.preferred_modules": 6, "cbfe.k": 67, "cd.k": 45}),
    (12, {"overcluster.k": 12, "fg_clustering.k": 11, "cd.preferred_modules": 11, "cbfe.k": 114, "cd.k": 82}),
    (2, {"overcluster.k": 2, "fg_clustering.k": 1, "cd.preferred_modules": 1, "cbfe.k": 19, "cd.k": 7}),
])
def test_cluster_counts_left_null_follow_num_classes(num_classes: int, expected: dict) -> None:
    from leopart.config import complete_config_with_derived, derived_k

    assert derived_k(num_classes) == expected
    cfg = yaml.safe_load((ROOT / "config" / "pvoc.yaml").read_text())
    cfg["dataset"]["num_classes"] = num_classes
    done, derived = complete_config_with_derived(cfg)
    assert derived == expected  # pvoc.yaml leaves all five null
    for key, value in expected.items():
        section, name = key.split(".")
        assert done[section][name] == value
    again, derived_again = complete_config_with_derived(done)  # completing twice changes nothing
    assert again == done and derived_again == {}


def test_set_cluster_counts_are_kept_and_none_means_no_infomap_preference() -> None:
    from leopart.config import complete_config_with_derived

    cfg = load_config(ROOT / "config" / "config.yaml")  # toy: cbfe.k 50 and cd.k 29 set, the rest derived
    assert (cfg["overcluster"]["k"], cfg["fg_clustering"]["k"], cfg["cd"]["preferred_modules"]) == (7, 6, 6)
    assert (cfg["cbfe"]["k"], cfg["cd"]["k"]) == (50, 29)
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["cd"]["preferred_modules"] = "none"
    done, derived = complete_config_with_derived(raw)
    assert done["cd"]["preferred_modules"] == "none" and "cd.preferred_modules" not in derived
    assert derived == {"overcluster.k": 7, "fg_clustering.k": 6}


def test_pvoc_kind_accepts_any_class_count_and_checks_class_names() -> None:
    cfg = yaml.safe_load((ROOT / "config" / "pvoc.yaml").read_text())
    cfg["dataset"]["num_classes"] = 11
    validate_config(cfg)
    cfg["dataset"]["class_names"] = ["background", "road"]
    assert _error(cfg) == "config: dataset.class_names lists 2 names but dataset.num_classes is 11"

"""Configuration validation with one-line messages that name the offending key, and schema defaults.

The JSON schema (``leopart/schemas/config.schema.yaml``, shipped with the package;
``workflow/schemas/`` links to it) catches typos (no unknown keys anywhere) and out-of-range values,
and holds the default of every optional key; :func:`check_config` adds the cross-key rules a schema
cannot express. :func:`complete_config` is the one entry point for the workflow and the tools: it
validates and fills the defaults, so code reads ``config[key]`` and never repeats a default.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from leopart.errors import LeopartError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


@cache
def _schema(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the YAML JSON-schema (a fresh copy)."""
    return copy.deepcopy(_schema(path))


def _set_defaults(validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any) -> Any:
    """``properties`` that first fills a mapping's missing keys with the schema's defaults."""
    if validator.is_type(instance, "object"):
        for key, subschema in properties.items():
            if "default" in subschema:
                instance.setdefault(key, copy.deepcopy(subschema["default"]))
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


_DefaultFillingValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"properties": _set_defaults}
)


def _filled(instance: Mapping[str, Any], schema: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """A copy of ``instance`` with the schema's defaults filled in; the first error as one line
    (its key prefixed by ``where``, the instance's place in a whole config)."""
    filled = copy.deepcopy(dict(instance))
    error = jsonschema.exceptions.best_match(_DefaultFillingValidator(schema).iter_errors(filled))
    if error is not None:
        if where:
            error.path.extendleft(reversed(where.split(".")))
        raise LeopartError(_describe(error))
    return filled


def _key_of(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_of(error)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = f"{key}." if error.absolute_path else ""
        return f"config: unknown key {where}{extra[0] if extra else '?'} (typo?)"
    if error.validator == "required":
        return f"config: {key}: {error.message}"
    if error.validator == "enum":
        return f"config: {key} = {error.instance!r} is not one of {error.validator_value}"
    return f"config: {key} = {error.instance!r}: {error.message}"


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> None:
    """Validate ``config`` against the schema and the cross-key rules (defaults need not be filled).

    Raises:
        LeopartError: one line naming the first offending key.
    """
    complete_config(config, schema)


def complete_config(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``config`` with every schema default filled in and the values that follow the
    dataset derived (:func:`derive_from_num_classes`), after validating it
    (:func:`validate_config`); ``config`` itself is not modified. Completing a completed config
    returns it unchanged.

    Raises:
        LeopartError: one line naming the first offending key.
    """
    return complete_config_with_derived(config, schema)[0]


def complete_config_with_derived(
    config: Mapping[str, Any], schema: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, int]]:
    """:func:`complete_config` and the values it derived from ``dataset.num_classes``
    (``{dotted key: value}``, empty when every one was set), for provenance records."""
    filled = _filled(config, schema if schema is not None else _schema(SCHEMA_PATH))
    derived = derive_from_num_classes(filled)
    check_config(filled)
    return filled, derived


#: The paper's cluster counts for PVOC's 21 classes (20 foreground), which the derived ones scale.
PAPER_CBFE_K, PAPER_CD_K, PAPER_NUM_CLASSES = 200, 149, 21


def derived_k(num_classes: int) -> dict[str, int]:
    """Cluster counts that follow the number of classes ``C`` (background included).

    ``overcluster.k = C``; ``fg_clustering.k = cd.preferred_modules = C - 1`` (foreground classes);
    ``cbfe.k = round(200 * C / 21)`` (the paper's 200 clusters of all tokens for 21 classes, about
    9.5 per class); ``cd.k = round(149 * (C - 1) / 20)`` (the paper's 149 foreground clusters for
    20 foreground classes, about 7.45 per class). Rounding is half up. For C = 21 these are the
    paper's 21, 20, 20, 200 and 149.
    """
    def half_up(x: float) -> int:
        return int(math.floor(x + 0.5))

    c = int(num_classes)
    return {
        "overcluster.k": c,
        "fg_clustering.k": c - 1,
        "cd.preferred_modules": c - 1,
        "cbfe.k": max(2, half_up(PAPER_CBFE_K * c / PAPER_NUM_CLASSES)),
        "cd.k": max(1, half_up(PAPER_CD_K * (c - 1) / (PAPER_NUM_CLASSES - 1))),
    }


def derive_from_num_classes(config: dict[str, Any]) -> dict[str, int]:
    """Fill, in place, each of the :func:`derived_k` keys that is ``null`` in ``config`` (defaults
    filled) and return the values filled in (``{dotted key: value}``)."""
    filled: dict[str, int] = {}
    for key, value in derived_k(config["dataset"]["num_classes"]).items():
        section, name = key.split(".")
        if config[section].get(name) is None:
            config[section][name] = value
            filled[key] = value
    return filled


def complete_section(definition: str, section: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of one config section, validated against the schema's ``$defs/<definition>`` with its
    defaults filled: for callers handed a section rather than a whole config (e.g. a trainer).

    Raises:
        LeopartError: one line naming the offending key, prefixed by ``where`` (e.g. ``training.dino``).
    """
    schema = {"$ref": f"#/$defs/{definition}", "$defs": _schema(SCHEMA_PATH)["$defs"]}
    return _filled(section, schema, where)


def check_config(config: Mapping[str, Any]) -> None:
    """Rules across keys: referenced models exist, ranges are ordered, dataset sections present.

    ``config`` has its defaults filled (:func:`complete_config`)."""
    models = config["models"]
    for row in ("dino", "leopart"):
        name = config["rows"][row]
        if name not in models:
            raise LeopartError(f"config: rows.{row} = {name!r} is not a key of models ({sorted(models)})")
    files = config["attention"].get("files") or {}
    has_files = bool(files.get("train")) and bool(files.get("val"))
    if bool(files.get("train")) != bool(files.get("val")):
        raise LeopartError("config: attention.files needs both train and val (or neither)")
    if not has_files and config["attention"]["model"] not in models:
        raise LeopartError(
            f"config: attention.model = {config['attention']['model']!r} is not a key of models"
        )
    lo, hi = config["cbfe"]["cut_range"]
    if not lo < hi:
        raise LeopartError(f"config: cbfe.cut_range = [{lo}, {hi}] must be increasing")
    features = config["features"]
    shard_size = features.get("shard_size")
    if shard_size is not None and shard_size % features["batch_size"] != 0:
        raise LeopartError(
            f"config: features.shard_size = {shard_size} must be a multiple of features.batch_size = "
            f"{features['batch_size']} (so that shards batch their images exactly as one job would)"
        )
    kind = config["dataset"]["kind"]
    if kind not in config["dataset"]:
        raise LeopartError(f"config: dataset.kind is {kind!r} but dataset.{kind} is missing")
    for name, model in models.items():
        emb = model.get("embeddings") or {}
        if bool(emb.get("train")) != bool(emb.get("val")):
            raise LeopartError(f"config: models.{name}.embeddings needs both train and val (or neither)")
        if model["arch"] == "custom" and not model.get("custom"):
            raise LeopartError(f"config: models.{name}.custom is required when arch is 'custom'")
        w = model["weights"]
        if w["source"] in ("dino", "leopart", "local") and not (w.get("url") or w.get("path")):
            if not emb.get("train"):
                raise LeopartError(
                    f"config: models.{name}.weights needs url or path for source {w['source']!r}"
                )
        if w["source"] == "local" and not w.get("path"):
            if not emb.get("train"):
                raise LeopartError(f"config: models.{name}.weights.path is required for source 'local'")
    names = config["dataset"].get("class_names")
    if names is not None and len(names) != config["dataset"]["num_classes"]:
        raise LeopartError(f"config: dataset.class_names lists {len(names)} names but dataset.num_classes is "
                           f"{config['dataset']['num_classes']}")


def merge_config(base: Mapping[str, Any], overlay: Mapping[str, Any] | None, *, strict: bool = True,
                 where: str = "") -> dict[str, Any]:
    """``base`` updated by ``overlay``: mappings are merged key by key, recursively; any other value
    (lists included) in ``overlay`` replaces ``base``'s. Neither argument is modified.

    ``strict`` (trainer settings against their defaults): ``base`` lists every key, so a key of
    ``overlay`` that ``base`` lacks raises a one-line LeopartError naming it (``where`` prefixes
    the dotted key), as does a non-mapping value for a key whose default is a non-empty mapping.
    A default of ``None`` (or ``{}``) takes any value as it is.

    ``strict=False`` merges the way ``snakemake --configfile A B`` does: ``overlay`` may add keys
    and replace a mapping by another value. :func:`load_config` merges config files this way and
    validates the result against the schema.
    """
    merged = copy.deepcopy(dict(base))
    for k, v in (overlay or {}).items():
        key = f"{where}.{k}" if where else str(k)
        if strict and k not in base:
            raise LeopartError(f"{key}: unknown config key (known: {', '.join(sorted(map(str, base)))})")
        old = base.get(k)
        if isinstance(old, Mapping) and old and isinstance(v, Mapping):
            merged[k] = merge_config(old, v, strict=strict, where=key)
        elif strict and isinstance(old, Mapping) and old:
            raise LeopartError(f"{key}: expected a mapping, got {type(v).__name__}")
        else:
            merged[k] = copy.deepcopy(v)
    return merged


def _read_yaml_mapping(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise LeopartError(f"{p}: config file is missing")
    try:
        config = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise LeopartError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(config, dict):
        raise LeopartError(f"{p}: config must be a mapping")
    return config


def load_config(path: str | Path, *overlays: str | Path) -> dict[str, Any]:
    """Read a YAML config file, validate it and fill its defaults (:func:`complete_config`), as the
    workflow does; used by tests and tools outside Snakemake.

    ``overlays`` are further YAML files merged on top in order (:func:`merge_config`), as
    ``snakemake --configfile path overlay ...`` does; only the merged result is validated.
    """
    config = _read_yaml_mapping(Path(path))
    for overlay in overlays:
        config = merge_config(config, _read_yaml_mapping(Path(overlay)), strict=False)
    return complete_config(config)

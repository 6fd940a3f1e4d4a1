"""Configuration validation with one-line messages that name the offending key.

The JSON schema (``workflow/schemas/config.schema.yaml``) catches typos (no unknown keys anywhere)
and out-of-range values; :func:`check_config` adds the cross-key rules a schema cannot express.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from leopart.errors import LeopartError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the YAML JSON-schema."""
    with open(path) as fh:
        return yaml.safe_load(fh)


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
    """Validate ``config`` against the schema and the cross-key rules.

    Raises:
        LeopartError: one line naming the first offending key.
    """
    schema = schema if schema is not None else load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(config)))
    if error is not None:
        raise LeopartError(_describe(error))
    check_config(config)


def check_config(config: Mapping[str, Any]) -> None:
    """Rules across keys: referenced models exist, ranges are ordered, dataset sections present."""
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
    lo, hi = config["cbfe"].get("cut_range", [0.55, 0.75])
    if not lo < hi:
        raise LeopartError(f"config: cbfe.cut_range = [{lo}, {hi}] must be increasing")
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
    if kind == "pvoc" and config["dataset"]["num_classes"] != 21:
        raise LeopartError("config: dataset.num_classes must be 21 for kind 'pvoc'")


def merge_config(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overlay`` the way ``snakemake --configfile A B`` merges: mappings are
    merged key by key, recursively; any other value (lists included) in ``overlay`` replaces
    ``base``'s. Neither argument is modified."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
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
    """Read and validate a YAML config file (used by tests and tools outside Snakemake).

    ``overlays`` are further YAML files merged on top in order (:func:`merge_config`), as
    ``snakemake --configfile path overlay ...`` does; only the merged result is validated.
    """
    config = _read_yaml_mapping(Path(path))
    for overlay in overlays:
        config = merge_config(config, _read_yaml_mapping(Path(overlay)))
    validate_config(config)
    return config

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
        if model.get("arch") is None or model.get("weights") is None:
            if emb.get("train"):
                continue  # embeddings only: nothing is built for this model
            missing = " and ".join(k for k in ("arch", "weights") if model.get(k) is None)
            raise LeopartError(
                f"config: models.{name}.{missing.split(' ')[0]} is required (models.{name} has no "
                f"{missing}; give them, or embeddings.train and embeddings.val instead)"
            )
        if model["arch"] == "custom" and not model.get("custom"):
            raise LeopartError(f"config: models.{name}.custom is required when arch is 'custom'")
        check_arch(name, model, config["features"]["input_size"])
        w = model["weights"]
        if w["source"] in ("dino", "leopart", "local") and not (w.get("url") or w.get("path")):
            if not emb.get("train"):
                raise LeopartError(
                    f"config: models.{name}.weights needs url or path for source {w['source']!r}"
                )
        if w["source"] == "local" and not w.get("path"):
            if not emb.get("train"):
                raise LeopartError(f"config: models.{name}.weights.path is required for source 'local'")
    _check_inference_models(config)
    names = config["dataset"].get("class_names")
    if names is not None and len(names) != config["dataset"]["num_classes"]:
        raise LeopartError(f"config: dataset.class_names lists {len(names)} names but dataset.num_classes is "
                           f"{config['dataset']['num_classes']}")
    check_labels_config(config["dataset"])


def check_labels_config(dataset: Mapping[str, Any]) -> None:
    """``dataset.background_class`` / ``ignore_index`` against ``num_classes``: one line each.

    Table 5's protocol needs a background class (CBFE's foreground/background split, the +1
    background label of +CBFE/+CD, the Hungarian matching of label 0): a dataset without one stops
    here rather than produce numbers that silently treat class 0 as background."""
    n = int(dataset["num_classes"])
    bg = dataset.get("background_class", 0)
    if bg is None:
        raise LeopartError(
            "config: dataset.background_class is null, but Table 5's rows (CBFE foreground, the +1 background "
            "label of +CBFE/+CD) need a background class: set it to the label that is not an object "
            "(e.g. road scenes: sky or road)")
    if not 0 <= int(bg) < n:
        raise LeopartError(f"config: dataset.background_class = {bg} is not a label in 0..{n - 1} "
                           f"(dataset.num_classes)")
    ignore = int(dataset.get("ignore_index", 255))
    if ignore < n:
        raise LeopartError(f"config: dataset.ignore_index = {ignore} is a class label (0..{n - 1}); "
                           f"use a value >= dataset.num_classes, e.g. 255")


def _check_inference_models(config: Mapping[str, Any]) -> None:
    """Models whose weights or CLS attention are needed must be buildable (have arch and weights):
    the attention model (without attention.files) and the trained/initial models of training."""
    models = config["models"]
    needs: list[tuple[str, str]] = []
    files = config["attention"].get("files") or {}
    if not files.get("train"):
        needs.append(("attention.model", config["attention"]["model"]))
    for kind, section in (config.get("training") or {}).items():
        if section and section.get("retrain"):
            needs.append((f"training.{kind}.model", section.get("model", kind)))
            if kind == "leopart":
                needs.append((f"training.{kind}.init_model", section.get("init_model", "dino")))
    for key, name in needs:
        entry = models.get(name)
        if entry is not None and (entry.get("arch") is None or entry.get("weights") is None):
            raise LeopartError(
                f"config: {key} = {name!r} names a model with embeddings only (no arch/weights), "
                "but this needs its backbone; give models." + name + ".arch and .weights"
            )


#: Patch sizes of DINO's released ViTs (the paper's backbones), known without importing timm so that
#: loading the paper's configs stays fast; a test checks them against timm.
DINO_VIT_PATCH = {"vit_small_patch16_224": 16, "vit_small_patch8_224": 8, "vit_base_patch16_224": 16,
                  "vit_base_patch8_224": 8}


@cache
def _arch_info(arch: str, shape: tuple[int | None, ...]) -> Any:
    """:func:`leopart.models.vit.arch_info` of a timm name with optional ``(patch_size, embed_dim,
    depth, num_heads)`` overrides, once per process (imports torch and timm; None when they are not
    installed here, then the check happens when the model is built)."""
    try:
        from leopart.models.vit import arch_info
    except ImportError:  # pragma: no cover - the workflow environment always has torch
        return None
    patch_size, embed_dim, depth, num_heads = shape
    return arch_info(arch, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads)


def check_arch(name: str, model: Mapping[str, Any], input_size: int) -> None:
    """Refuse a ``models.<name>.arch`` that feature extraction cannot run, before any stage runs.

    ``custom`` needs nothing beyond its schema; a timm name must build (on the meta device: no
    memory, no weights) as a timm ``VisionTransformer`` with a class token and an absolute
    positional embedding (register tokens allowed), so ``resnet50`` is refused here. The input size
    must be a multiple of the patch size (``features.input_size`` squashes every image to that
    square; the token grid is ``input_size / patch_size`` per side).

    Raises:
        LeopartError: one line naming ``models.<name>.arch`` (or ``features.input_size``).
    """
    arch = model["arch"]
    if arch == "custom":
        patch = int(model["custom"]["patch_size"])
    elif arch in DINO_VIT_PATCH and not model.get("custom"):
        patch = DINO_VIT_PATCH[arch]
    else:
        custom = model.get("custom") or {}
        try:
            info = _arch_info(arch, tuple(custom.get(k) for k in ("patch_size", "embed_dim", "depth", "num_heads")))
        except LeopartError as exc:
            detail = str(exc).removeprefix(f"arch {arch!r}: ")
            raise LeopartError(f"config: models.{name}.arch = {arch!r}: {detail}") from None
        if info is None:
            return
        ph, pw = info.patch_size
        if ph != pw:
            raise LeopartError(f"config: models.{name}.arch = {arch!r}: non-square patches {ph}x{pw}")
        patch = ph
    if input_size % patch:
        raise LeopartError(
            f"config: features.input_size = {input_size} is not a multiple of the patch size {patch} of "
            f"models.{name}.arch = {arch!r} (e.g. {input_size - input_size % patch} or "
            f"{input_size - input_size % patch + patch})"
        )


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

"""Generate ``config/README.md`` (every config key: type, default, description) from the schema.

    python -m leopart.config_docs            # rewrite config/README.md
    python -m leopart.config_docs --check    # exit 1 if config/README.md is stale

The schema (``leopart/schemas/config.schema.yaml``) is the only source of the descriptions,
types and ranges. Defaults come from the schema's ``default:`` except for the trainer settings
(``training.<kind>.config.*``): those are the trainers' ``DEFAULT_CONFIG`` dicts (for DINO with
``TOY_CONFIG`` merged on top when ``toy_defaults`` is true), which the schema does not repeat.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from leopart.config import load_schema

README_PATH = Path("config") / "README.md"
GENERATOR = "python -m leopart.config_docs"
NO_DEFAULT = object()


@dataclass(frozen=True)
class Key:
    """One documented config key."""

    path: str
    schema: Mapping[str, Any]
    required: bool
    default: Any = NO_DEFAULT


def resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` (a local JSON pointer) followed; sibling keywords win over the
    referenced ones, except ``properties``, which are merged property by property."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is None:
        return node
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    merged = resolve(target, root)
    props = dict(merged.get("properties", {}))
    for name, sub in node.pop("properties", {}).items():
        props[name] = _merge(props[name], sub, root) if name in props else sub
    merged.update(node)
    if props:
        merged["properties"] = props
    return merged


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    out = resolve(base, root)
    out.update(resolve(over, root))
    return out


def iter_keys(schema: Mapping[str, Any] | None = None) -> Iterator[Key]:
    """Every property of the schema, depth first in schema order; ``models.<name>`` stands for
    the entries of the free-form ``models`` mapping."""
    root = schema if schema is not None else load_schema()
    yield from _walk(resolve(root, root), root, "", NO_DEFAULT)


def _walk(node: Mapping[str, Any], root: Mapping[str, Any], prefix: str, parent_default: Any) -> Iterator[Key]:
    required = set(node.get("required", []))
    for name, sub in (node.get("properties") or {}).items():
        sub = resolve(sub, root)
        path = f"{prefix}{name}"
        default = sub.get("default", NO_DEFAULT)
        if default is NO_DEFAULT and isinstance(parent_default, Mapping) and name in parent_default:
            default = parent_default[name]
        yield Key(path, sub, name in required, default)
        yield from _walk(sub, root, f"{path}.", default)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        sub = resolve(extra, root)
        path = f"{prefix}<name>"
        yield Key(path, sub, False)
        yield from _walk(sub, root, f"{path}.", NO_DEFAULT)


# ------------------------------------------------------------------ trainer defaults


def trainer_defaults() -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    """Per training kind: (DEFAULT_CONFIG, DEFAULT_CONFIG with the toy overrides or None)."""
    from leopart.config import merge_config
    from leopart.train import dino, leopart_trainer

    return {
        "dino": (dino.DEFAULT_CONFIG, merge_config(dino.DEFAULT_CONFIG, dino.TOY_CONFIG)),
        "leopart": (leopart_trainer.DEFAULT_CONFIG, None),
    }


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return NO_DEFAULT
        node = node[part]
    return node


# ------------------------------------------------------------------ rendering


def _value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return f"`{text}`"


def _bound(node: Mapping[str, Any]) -> str:
    lo = hi = None
    if "minimum" in node:
        lo = ("[", node["minimum"])
    elif "exclusiveMinimum" in node:
        lo = ("(", node["exclusiveMinimum"])
    if "maximum" in node:
        hi = ("]", node["maximum"])
    elif "exclusiveMaximum" in node:
        hi = (")", node["exclusiveMaximum"])
    if lo and hi:
        return f" in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f" {'≥' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f" {'≤' if hi[0] == ']' else '<'} {hi[1]}"
    return ""


def type_text(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """Human-readable type with ranges, e.g. ``integer ≥ 1``, ``number in (0, 1]``."""
    node = resolve(node, root)
    if "enum" in node:
        return " | ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(type_text(alt, root) for alt in node["oneOf"])
    types = node.get("type", "any")
    types = [types] if isinstance(types, str) else list(types)
    parts = []
    for t in types:
        if t in ("integer", "number"):
            parts.append(t + _bound(node))
        elif t == "array":
            items = type_text(node.get("items", {}), root)
            lo, hi = node.get("minItems"), node.get("maxItems")
            if lo is not None and lo == hi:
                count = f"{lo} × "
            elif lo:
                count = f"≥ {lo} × "
            else:
                count = ""
            parts.append(f"list of {count}{items}")
        elif t == "object":
            parts.append("mapping")
        elif t == "string" and "pattern" in node:
            parts.append(f"string matching `{node['pattern']}`")
        else:
            parts.append(t)
    return " or ".join(parts)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default_cell(key: Key, trainers: Mapping[str, tuple[dict, dict | None]]) -> str:
    parts = key.path.split(".")
    if len(parts) > 3 and parts[0] == "training" and parts[2] == "config":
        base, toy = trainers[parts[1]]
        dotted = ".".join(parts[3:])
        value = _lookup(base, dotted)
        if isinstance(value, Mapping) or value is NO_DEFAULT:
            return "—"
        text = _value(value)
        if toy is not None and _lookup(toy, dotted) != value:
            text += f" (toy: {_value(_lookup(toy, dotted))})"
        return text
    if key.default is not NO_DEFAULT and not isinstance(key.default, Mapping):
        return _value(key.default)
    if key.default is not NO_DEFAULT:
        return "see below"
    return "required" if key.required else "—"


HEADER = f"""\
<!-- Generated by `{GENERATOR}` from leopart/schemas/config.schema.yaml. Do not edit by hand:
     edit the schema's descriptions (or the trainers' DEFAULT_CONFIG) and rerun the generator;
     tests/test_config_docs.py fails when this file is stale. -->

# Configuration keys

Every key of the pipeline config (`config/config.yaml` for the toy default, `config/pvoc.yaml` for
the paper's protocol), as the schema `leopart/schemas/config.schema.yaml` defines it. A config is
checked against the schema before any job runs: an unknown key (a typo) or an impossible value
stops the run with one line naming the key. Overlays given after the config
(`snakemake --configfile config/config.yaml overlay.yaml`, `--overlay` of `leopart.stages.train`)
are merged key by key first.

*Default*: the value used when the key is left out (`required`: the key must be given; `—`: no
default, or the key is a section). For the trainer settings (`training.<kind>.config.*`) the
defaults are the trainers' `DEFAULT_CONFIG` (the published recipes); *toy* is the DINO value
used when `training.dino.toy_defaults` is true (`leopart.train.dino.TOY_CONFIG`).
"""


def render(schema: Mapping[str, Any] | None = None) -> str:
    """The whole of ``config/README.md``."""
    root = schema if schema is not None else load_schema()
    trainers = trainer_defaults()
    keys = list(iter_keys(root))
    lines = [HEADER]
    sections: list[str] = [k.path for k in keys if "." not in k.path]
    for top in sections:
        rows = [k for k in keys if k.path == top or k.path.startswith(top + ".")]
        lines.append(f"## {top}\n")
        if len(rows) > 1:  # a section's own description, then its keys
            lines.append(_cell(rows[0].schema.get("description", "")) + "\n")
        body = rows if len(rows) == 1 else rows[1:]
        groups = _groups(top, body)
        for title, group in groups:
            if title:
                lines.append(f"### {title}\n")
            lines.append("| key | type | default | description |")
            lines.append("|---|---|---|---|")
            for key in group:
                kind, default = _cell(type_text(key.schema, root)), _cell(_default_cell(key, trainers))
                lines.append(f"| `{key.path}` | {kind} | {default} | {_cell(key.schema.get('description', ''))} |")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _groups(top: str, rows: list[Key]) -> list[tuple[str, list[Key]]]:
    """The long ``training`` section is split per trainer and its settings; others stay whole."""
    if top != "training":
        return [("", rows)]
    groups: dict[str, list[Key]] = {}
    for key in rows:
        parts = key.path.split(".")
        title = ".".join(parts[:3]) if len(parts) >= 3 and parts[2] == "config" else ".".join(parts[:2])
        groups.setdefault(title, []).append(key)
    return list(groups.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=README_PATH, help=f"file to write (default {README_PATH})")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run `{GENERATOR}`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Layering: library modules never import the layers built on them.

``leopart.stages`` (Snakemake stages) uses the library; nothing else imports it. ``leopart.models``
(backbones) is used by training and evaluation and imports neither.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "leopart"

#: package -> packages it must not import
FORBIDDEN = {
    "": ("leopart.stages",),
    "models": ("leopart.stages", "leopart.train", "leopart.eval"),
    "train": ("leopart.stages", "leopart.eval"),
    "eval": ("leopart.stages", "leopart.train"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_it(package: str) -> None:
    root = PACKAGE / package
    files = [p for p in root.rglob("*.py") if package or "stages" not in p.relative_to(root).parts]
    assert files
    bad = sorted(f"{p.relative_to(PACKAGE)} imports {name}" for p in files for name in _imports(p)
                 for layer in FORBIDDEN[package] if name == layer or name.startswith(layer + "."))
    assert not bad, bad
